// Reductions across the threads of a warp and of a block, in a fixed order:
// a result depends only on the launch shape, never on timing, so two runs of
// the same call give bitwise the same values (no atomics anywhere).
//
// Butterfly (xor) shuffles leave every lane with the same result: at each
// step two lanes combine the same two values, and the operations used
// (sum; max; merge_softmax_states) are commutative.
#pragma once

#include "../entropy_math.h"

namespace hee {
namespace cuda {

constexpr unsigned kFullWarpMask = 0xffffffffu;
constexpr int kWarpSize = 32;

// Sum / max over aligned groups of kWidth lanes (kWidth a power of two <= 32).
// Every lane of the warp must call it.
template <int kWidth, typename T>
__device__ __forceinline__ T group_sum(T value) {
#pragma unroll
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    value = value + __shfl_xor_sync(kFullWarpMask, value, offset, kWidth);
  }
  return value;
}

template <int kWidth, typename T>
__device__ __forceinline__ T group_max(T value) {
#pragma unroll
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    value = math::max_of(
        __shfl_xor_sync(kFullWarpMask, value, offset, kWidth), value);
  }
  return value;
}

template <typename T>
__device__ __forceinline__ math::SoftmaxState<T> warp_merge(
    math::SoftmaxState<T> state) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const math::SoftmaxState<T> other{
        __shfl_xor_sync(kFullWarpMask, state.max, offset),
        __shfl_xor_sync(kFullWarpMask, state.sum_exp, offset),
        __shfl_xor_sync(kFullWarpMask, state.sum_exp_times_shift, offset)};
    state = math::merge_softmax_states(state, other);
  }
  return state;
}

constexpr int kMaxBlockThreads = 512;

// The merged state of every thread's state, in thread 0 (blockDim.x a
// multiple of 32, at most kMaxBlockThreads). Every thread must call it.
template <typename T>
__device__ math::SoftmaxState<T> block_merge(math::SoftmaxState<T> state) {
  __shared__ T warp_max[kMaxBlockThreads / kWarpSize];
  __shared__ T warp_sum_exp[kMaxBlockThreads / kWarpSize];
  __shared__ T warp_sum_exp_times_shift[kMaxBlockThreads / kWarpSize];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  state = warp_merge(state);
  if (lane == 0) {
    warp_max[warp] = state.max;
    warp_sum_exp[warp] = state.sum_exp;
    warp_sum_exp_times_shift[warp] = state.sum_exp_times_shift;
  }
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x / kWarpSize;
    state = lane < num_warps
        ? math::SoftmaxState<T>{warp_max[lane], warp_sum_exp[lane],
                                warp_sum_exp_times_shift[lane]}
        : math::empty_softmax_state<T>();
    state = warp_merge(state);
  }
  return state;
}

// values[0] = the sum of values[0, count), by halving (count a power of two,
// at most blockDim.x). Every thread must call it; values is in shared memory
// and was written before a __syncthreads().
__device__ __forceinline__ double tree_sum(double* values, int count) {
  for (int stride = count / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) {
      values[threadIdx.x] += values[threadIdx.x + stride];
    }
    __syncthreads();
  }
  return values[0];
}

// The sum of n doubles in global memory: each thread adds its strided share
// in order, then the shares are summed by halving. Returned to thread 0
// (blockDim.x a power of two, at most kMaxBlockThreads). Every thread must
// call it.
__device__ __forceinline__ double block_ordered_sum(
    const double* values,
    int64_t n) {
  __shared__ double shares[kMaxBlockThreads];
  double share = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    share += values[i];
  }
  __syncthreads();  // the previous call's readers are done with `shares`
  shares[threadIdx.x] = share;
  __syncthreads();
  return tree_sum(shares, blockDim.x);
}

} // namespace cuda
} // namespace hee

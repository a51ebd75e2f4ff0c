// Reductions across the threads of a warp and of a block, in a fixed order:
// a result depends only on the launch shape, never on timing, so two runs of
// the same call give bitwise the same values (no atomics anywhere).
//
// Butterfly (xor) shuffles leave every lane with the same result: at each
// step two lanes combine the same two values with a commutative operation
// (a sum, or a max that ignores NaN, so that lanes agree even when one of
// them holds a NaN).
//
// Softmax states are merged in two phases (math::shifted_state says why that
// is the union of the parts): the largest max first, then each
// thread moves its own moments to it once, then two plain sums. A merge costs
// one exp per thread rather than two per shuffle step.
#pragma once

#include "../entropy_math.h"

namespace hee {
namespace cuda {

constexpr unsigned kFullWarpMask = 0xffffffffu;
constexpr int kWarpSize = 32;
constexpr int kMaxBlockThreads = 512;
constexpr int kMaxWarpsPerBlock = kMaxBlockThreads / kWarpSize;

// Sum / NaN-ignoring max over aligned groups of kWidth lanes (kWidth a power
// of two <= 32). Every lane of the warp must call it.
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
    value = math::max_ignoring_nan(
        value, __shfl_xor_sync(kFullWarpMask, value, offset, kWidth));
  }
  return value;
}

// The merged state of the warp's states, in every lane.
template <typename T>
__device__ __forceinline__ math::SoftmaxState<T> warp_merge(
    math::SoftmaxState<T> state) {
  const T to = math::max_ignoring_nan(
      group_max<kWarpSize>(state.max), math::lowest_finite<T>());
  state = math::shifted_state(state, to);
  return {to, group_sum<kWarpSize>(state.sum_exp),
          group_sum<kWarpSize>(state.sum_exp_times_shift)};
}

// value of warp 0's lane w = the w-th warp's value, in warp order; every
// thread must call it, and the block has at most kMaxWarpsPerBlock warps.
// Returns the warp-0 lane's value (other warps: `fill`).
template <typename T>
__device__ __forceinline__ T gather_warp_values(T warp_value, T fill) {
  __shared__ T per_warp[kMaxWarpsPerBlock];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  __syncthreads();  // an earlier call's readers are done with per_warp
  if (lane == 0) {
    per_warp[warp] = warp_value;
  }
  __syncthreads();
  const int num_warps = blockDim.x / kWarpSize;
  return warp == 0 && lane < num_warps ? per_warp[lane] : fill;
}

// The NaN-ignoring max of every thread's value, in every thread.
template <typename T>
__device__ __forceinline__ T block_max(T value) {
  __shared__ T result;
  value = gather_warp_values(
      group_max<kWarpSize>(value), math::negative_infinity<T>());
  if (threadIdx.x < kWarpSize) {
    value = group_max<kWarpSize>(value);
    if (threadIdx.x == 0) {
      result = value;
    }
  }
  __syncthreads();
  return result;
}

// The sum of every thread's value, in thread 0: each warp by shuffles, then
// the warps' sums in warp order.
template <typename T>
__device__ __forceinline__ T block_sum(T value) {
  value = gather_warp_values(group_sum<kWarpSize>(value), T(0));
  if (threadIdx.x < kWarpSize) {
    value = group_sum<kWarpSize>(value);
  }
  return value;
}

// The merged state of every thread's state, in thread 0 (blockDim.x a
// multiple of 32, at most kMaxBlockThreads). Every thread must call it.
// With a scale, the states are of tempered logits (math::shift_running_moments).
template <typename T>
__device__ math::SoftmaxState<T> block_merge(
    math::SoftmaxState<T> state,
    T scale = T(1)) {
  const T to =
      math::max_ignoring_nan(block_max(state.max), math::lowest_finite<T>());
  state = math::shifted_state(state, to, scale);
  return {to, block_sum(state.sum_exp), block_sum(state.sum_exp_times_shift)};
}

// The sum of n doubles in global memory, in thread 0. Each thread adds its
// strided share in order, with kUnroll loads in flight at once (their sum
// order is unchanged), then the shares are summed in thread order. Every
// thread must call it.
__device__ __forceinline__ double block_ordered_sum(
    const double* values,
    int64_t n) {
  constexpr int kUnroll = 8;
  const int64_t stride = blockDim.x;
  double share = 0.0;
  int64_t i = threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    double loaded[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      loaded[u] = values[i + u * stride];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      share += loaded[u];
    }
  }
  for (; i < n; i += stride) {
    share += values[i];
  }
  return block_sum(share);
}

} // namespace cuda
} // namespace hee

// The CUDA kernels of parameterized actions (parameterized_actions;
// docs/design.md, "Parameterized actions"): after the discrete forward, each
// row's expected action entropy h_c = sum_k p[k] c[k] (row 3 of row_stats)
// and the partial sums of H_c; in the backward, the gradients of the logits
// and of log_std from the row statistics, with the logits read once.
//
// A warp holds a row and its lanes take 32 actions at a time (parameterized
// policies have a handful to a few hundred actions); c[k], the Gaussian
// entropy of action k's P log-stds (math::action_entropy_of_sum), is summed
// where it is read, as the CPU kernels sum it. Only launch_plan.h includes this
// file: its non-template kernel is defined once.
#pragma once

#include <cstdint>

#include "backward_kernel.cuh"
#include "block_reduce.cuh"
#include "device_scalars.cuh"
#include "forward_kernels.cuh"

namespace hee {
namespace cuda {

constexpr int kParameterizedThreads = 256;
constexpr int kParameterizedWarps = kParameterizedThreads / kWarpSize;

// log_std as these kernels read it: rows [R, K * P], contiguous, R = B (each
// row's own) or 1 (a [K, P] shared by the batch, row stride 0).
struct ActionParams {
  const void* values = nullptr;
  DType dtype = DType::kFloat;
  int64_t row_stride = 0;  // K * P, or 0
  int64_t num_params = 0;  // P
};

// c[k] of a row: the entropy of action k's Gaussian parameters, in the
// logits' acc (math::action_entropy_of_sum; the constant's product is rounded
// on its own, math::rounded_product).
template <typename acc>
__device__ __forceinline__ acc action_entropy(
    const ActionParams& params,
    int64_t row,
    int64_t k) {
  const int64_t first = row * params.row_stride + k * params.num_params;
  acc sum_log_std = 0;
  for (int64_t j = 0; j < params.num_params; ++j) {
    sum_log_std += static_cast<acc>(
        load_as_double(params.values, params.dtype, first + j));
  }
  return math::action_entropy_of_sum(
      sum_log_std, math::action_entropy_constant<acc>(params.num_params));
}

// p[k] of a row from its statistics, and log p[k] clamped at
// log_probability_floor (a ruled-out action: p = 0).
template <typename acc>
__device__ __forceinline__ acc action_probability(
    acc logit,
    acc shift,
    acc log_sum_exp,
    acc& log_p) {
  log_p = math::clamped_log_prob(
      logit, shift, log_sum_exp, math::log_probability_floor<acc>());
  return math::fast_exp_of(log_p);
}

template <typename scalar_t>
struct ExpectedActionEntropyArgs {
  using acc = acc_t<scalar_t>;
  const scalar_t* logits = nullptr;  // [B, K], unit column stride
  int64_t batch = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  const bool* allowed = nullptr;  // kActionMask kernels only
  int64_t allowed_row_stride = 0;
  acc* row_stats = nullptr;  // [4, pitch]: reads shift and log s, writes h_c
  int64_t stats_pitch = 0;
  ActionParams params;
  RowWeights row_weights;
  double* partials = nullptr;  // one sum of weighted h_c per block
};

// h_c of every row, a warp per row, one wave of blocks looping over rows;
// each block writes the sum of its rows' (weighted) h_c, rows in order.
template <typename scalar_t, bool kActionMask>
__global__ void __launch_bounds__(kParameterizedThreads)
    expected_action_entropy_rows(ExpectedActionEntropyArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t rows_per_wave =
      static_cast<int64_t>(gridDim.x) * kParameterizedWarps;
  double sum = 0.0;  // lane 0: this warp's rows
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kParameterizedWarps +
           warp;
       row < a.batch; row += rows_per_wave) {
    const scalar_t* z = a.logits + row * a.row_stride;
    const auto allowed = allowed_actions<kActionMask>(a, row);
    const acc shift = a.row_stats[row];
    const acc log_sum_exp = a.row_stats[a.stats_pitch + row];
    acc share = acc(0);
    for (int64_t k = lane; k < a.num_cols; k += kWarpSize) {
      acc log_p;
      const acc p = action_probability(
          allowed_logit_at(allowed, k, static_cast<acc>(z[k])), shift,
          log_sum_exp, log_p);
      share = math::multiply_add(p, action_entropy<acc>(a.params, row, k), share);
    }
    const acc expected = group_sum<kWarpSize>(share);
    if (lane == 0) {
      a.row_stats[3 * a.stats_pitch + row] = expected;
      sum += weighted_row_value(a.row_weights, row, expected);
    }
  }
  const double block_total = block_sum(sum);
  if (threadIdx.x == 0) {
    a.partials[blockIdx.x] = block_total;
  }
}

template <typename scalar_t>
struct ParameterizedBackwardArgs {
  // The scales, and the coefficient's gradient (block 0); its grad_log_std
  // is null: log_std's gradient is written here.
  BackwardProblem problem;
  ActionParams params;
  // log_std's gradient, one value per action (the same for its P
  // parameters): [B, K] for rows of their own, or, for a shared [K, P], each
  // warp's sum over its rows into warp_action_grads [warps, K], summed over
  // the warps in order by sum_action_grads. nullptr: not wanted.
  void* grad_actions = nullptr;
  DType grad_actions_dtype = DType::kFloat;
  double* warp_action_grads = nullptr;  // shared log_std only
};

// The backward of a parameterized policy, a warp per row as the forward,
// each lane one action of 32 at a time: the gradient of g h + a h_c for the
// logits (math::parameterized_grad_element) and a p[k] for log_std, with g
// and a the row's scales of its entropy and of its h_c. Actions outermost,
// so that a lane keeps its action's sum over the warp's rows in a register.
template <typename scalar_t, bool kActionMask>
__global__ void __launch_bounds__(kParameterizedThreads)
    parameterized_backward_rows(ParameterizedBackwardArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const BackwardProblem& b = a.problem;
  const GradScale<acc> grad_scale = block_grad_scale<acc>(b);
  if (b.grad_logits == nullptr && a.grad_actions == nullptr &&
      a.warp_action_grads == nullptr) {
    return;  // the coefficient's gradient alone
  }
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kParameterizedWarps;
  const int64_t global_warp =
      static_cast<int64_t>(blockIdx.x) * kParameterizedWarps + warp;
  const scalar_t* logits = static_cast<const scalar_t*>(b.logits);
  const acc* row_stats = static_cast<const acc*>(b.row_stats);
  scalar_t* grad_logits = static_cast<scalar_t*>(b.grad_logits);
  const int64_t K = b.num_cols;
  for (int64_t first = 0; first < K; first += kWarpSize) {
    const int64_t k = first + lane;
    if (k >= K) {
      break;  // no shuffles below: a lane past the row leaves early
    }
    double action_grad_sum = 0.0;
    for (int64_t row = global_warp; row < b.batch; row += warps) {
      const acc shift = row_stats[row];
      const acc log_sum_exp = row_stats[b.stats_pitch + row];
      const acc entropy = row_stats[2 * b.stats_pitch + row];
      const acc expected = row_stats[3 * b.stats_pitch + row];
      const acc grad_entropy =
          grad_scale.row_scale(b.entropy_row_weights, row);
      const acc grad_expected =
          grad_scale.continuous_row_scale(b.row_weights, row);
      acc log_p;
      const acc p = action_probability(
          allowed_logit_at(
              allowed_actions<kActionMask>(b, row), k,
              static_cast<acc>(logits[row * b.row_stride + k])),
          shift, log_sum_exp, log_p);
      if (grad_logits != nullptr) {
        grad_logits[row * b.grad_row_stride + k] = static_cast<scalar_t>(
            math::parameterized_grad_element(
                p, log_p, acc(0) - grad_entropy, grad_expected,
                action_entropy<acc>(a.params, row, k),
                math::parameterized_row_offset(
                    grad_entropy, entropy, grad_expected, expected)));
      }
      const acc action_grad = grad_expected * p;
      if (a.warp_action_grads != nullptr) {
        action_grad_sum += static_cast<double>(action_grad);
      } else if (a.grad_actions != nullptr) {
        store_from_double(
            a.grad_actions, a.grad_actions_dtype, row * K + k,
            static_cast<double>(action_grad));
      }
    }
    if (a.warp_action_grads != nullptr) {
      a.warp_action_grads[global_warp * K + k] = action_grad_sum;
    }
  }
}

// A shared [K, P] log_std's gradient: each action's sum of the warps' sums,
// warps in order (the same bits on every run), a thread per action.
struct SumActionGradsArgs {
  const double* warp_action_grads = nullptr;  // [warps, K]
  int64_t num_warps = 0;
  int64_t num_actions = 0;  // K
  void* out = nullptr;  // [K]
  DType dtype = DType::kFloat;
};

__global__ void __launch_bounds__(kParameterizedThreads)
    sum_action_grads(SumActionGradsArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       k < a.num_actions; k += stride) {
    double sum = 0.0;
    for (int64_t w = 0; w < a.num_warps; ++w) {
      sum += a.warp_action_grads[w * a.num_actions + k];
    }
    store_from_double(a.out, a.dtype, k, sum);
  }
}

} // namespace cuda
} // namespace hee

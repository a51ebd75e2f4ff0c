// The hybrid loss's small kernels around the row passes: the sum of the row
// weights and each row's weight of a normalized entropy before them, and the
// finish after them, which adds the partial sums in order and combines the
// losses. Apart from forward_kernels.cuh because they are not templates: one
// translation unit (hybrid_entropy_cuda.cu) defines them.
#pragma once

#include <cstdint>

#include "block_reduce.cuh"
#include "device_scalars.cuh"

namespace hee {
namespace cuda {

// The last kernel: batch means from the partial sums, added in order, and
// the seven outputs from combine_losses (one block).
struct FinishForwardArgs {
  const double* entropy_partials = nullptr;
  int64_t num_entropy_partials = 0;
  const double* log_std_partials = nullptr;
  int64_t num_log_std_partials = 0;
  bool has_discrete = false;
  bool has_continuous = false;
  // H_d = (sum of row entropies) / discrete_denominator: B, or the sum of
  // the row weights.
  MeanDenominator discrete_denominator;
  // H_c = D * const + (sum of log_std) / continuous_denominator: R for
  // [R, D] (or the sum of the row weights), 1 for a shared [D].
  MeanDenominator continuous_denominator;
  // With a given mean_denominator (both denominators above are it), H_c is
  // math::gaussian_entropy_over, which needs sum_i c_i (row_weight_sum)
  // and whether log_std is one shared row.
  bool divides_by_given_denominator = false;
  MeanDenominator row_weight_sum;
  bool shared_log_std = false;
  int64_t log_std_dims = 0;
  // The normalizer of every row's entropy of a single head whose rows all
  // allow all actions (1 otherwise: per-row normalizers are in the partials).
  double discrete_entropy_scale = 1.0;
  // Sub-heads (discrete_sizes): num_heads records, one per head, written by
  // the heads' row launches; each head's partial sums lie where its record
  // says in entropy_partials. H_d is the sum of the heads' means, each head
  // penalized on its own (math::sub_head_penalty); params then carry no
  // discrete threshold. Each head's mean goes to discrete_entropy_per_head.
  const SubHeadRecord* head_records = nullptr;
  int64_t num_heads = 0;
  void* discrete_entropy_per_head = nullptr;
  // Parameterized actions: the log_std partials are sums of each row's
  // expected action entropy h_c, and H_c is their mean over the rows, with
  // continuous_denominator the rows' (math::gaussian_entropy is not used).
  bool continuous_is_row_mean = false;
  Coefficients coeff;
  math::LossParams params{};
  void* outputs[7] = {};  // total, ..., continuous_entropy
  DType output_dtype = DType::kFloat;
};

constexpr int kFinishThreads = 256;

// The sum of the row weights, in a fixed order (one block), for the batch
// means' denominators: the first launch of a call with row weights.
struct SumRowWeightsArgs {
  RowWeights weights;
  double* sum = nullptr;
};

__global__ void __launch_bounds__(kFinishThreads)
    sum_row_weights(SumRowWeightsArgs a) {
  double share = 0.0;
  for (int64_t i = threadIdx.x; i < a.weights.count; i += blockDim.x) {
    share += a.weights.at(i);
  }
  const double sum = block_sum(share);
  if (threadIdx.x == 0) {
    *a.sum = sum;
  }
}

// Thread 0's sum of the sub-heads' means and of their penalties, each head's
// mean also stored to discrete_entropy_per_head, heads in order. Every
// thread must call it.
struct SubHeadSums {
  double entropy = 0.0;
  double penalty = 0.0;
};

__device__ __forceinline__ SubHeadSums sum_sub_heads(
    const FinishForwardArgs& a) {
  SubHeadSums sums;
  for (int64_t h = 0; h < a.num_heads; ++h) {
    const SubHeadRecord head = a.head_records[h];
    const double sum = block_ordered_sum(
        a.entropy_partials + head.first_partial, head.num_partials);
    if (threadIdx.x == 0) {
      const double head_entropy =
          head.entropy_scale * sum / a.discrete_denominator.read();
      store_from_double(
          a.discrete_entropy_per_head, a.output_dtype, h, head_entropy);
      sums.entropy += head_entropy;
      sums.penalty += math::sub_head_penalty(
          a.params.penalty_multiplier, head.has_threshold, head.threshold,
          head_entropy);
    }
  }
  return sums;
}

// Each row's weight of its entropy in one head's sums where the entropy is
// normalized under an action mask (normalize_discrete_entropy): its row
// weight (1 without weights) times math::entropy_normalizer of the actions
// the mask allows among the head's columns. A warp per row, before the
// head's forward and backward launches, which read these as their weights:
// the warp's lanes read consecutive flags of the row, where a thread per row
// walked a whole row alone (at a vocabulary's K, a long serial loop in each
// of too few threads).
struct NormalizedRowWeightsArgs {
  const bool* allowed = nullptr;  // the head's first column of row 0
  int64_t allowed_row_stride = 0;
  int64_t num_cols = 0;  // the head's
  int64_t batch = 0;
  RowWeights row_weights;
  double* out = nullptr;  // [B]
};

constexpr int kNormalizedRowsPerBlock = kFinishThreads / kWarpSize;

__global__ void __launch_bounds__(kFinishThreads)
    normalized_row_weights(NormalizedRowWeightsArgs a) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t stride =
      static_cast<int64_t>(gridDim.x) * kNormalizedRowsPerBlock;
  // row is the same in every lane of a warp: the loop and its shuffles are
  // warp-uniform.
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kNormalizedRowsPerBlock +
           threadIdx.x / kWarpSize;
       row < a.batch; row += stride) {
    const bool* allowed = a.allowed + row * a.allowed_row_stride;
    int64_t count = 0;
    for (int64_t k = lane; k < a.num_cols; k += kWarpSize) {
      count += allowed[k] ? 1 : 0;
    }
    count = group_sum<kWarpSize>(count);
    if (lane == 0) {
      a.out[row] = (a.row_weights.present() ? a.row_weights.at(row) : 1.0) *
          math::entropy_normalizer(count);
    }
  }
}

__global__ void __launch_bounds__(kFinishThreads)
    finish_forward(FinishForwardArgs a) {
  const SubHeadSums sub_heads = sum_sub_heads(a);
  const double entropy_sum = a.num_heads > 0
      ? 0.0
      : block_ordered_sum(a.entropy_partials, a.num_entropy_partials);
  const double log_std_sum =
      block_ordered_sum(a.log_std_partials, a.num_log_std_partials);
  if (threadIdx.x != 0) {
    return;
  }
  const double discrete_entropy = !a.has_discrete ? 0.0
      : a.num_heads > 0
      ? sub_heads.entropy
      : a.discrete_entropy_scale * entropy_sum / a.discrete_denominator.read();
  const double num_dims = static_cast<double>(a.log_std_dims);
  const double continuous_entropy = !a.has_continuous ? 0.0
      : a.continuous_is_row_mean
      ? log_std_sum / a.continuous_denominator.read()
      : a.divides_by_given_denominator
      ? math::gaussian_entropy_over(
            log_std_sum, a.shared_log_std, a.row_weight_sum.read(), num_dims,
            a.continuous_denominator.read())
      : math::gaussian_entropy(
            log_std_sum / a.continuous_denominator.read(), num_dims);
  math::LossComponents c = math::combine_losses(
      a.coeff.read(), a.has_discrete, discrete_entropy, a.has_continuous,
      continuous_entropy, a.params);
  if (a.num_heads > 0) {
    c = math::with_discrete_penalty(c, sub_heads.penalty);
  }
  const double values[7] = {c.total,
                            c.discrete,
                            c.continuous,
                            c.discrete_penalty,
                            c.continuous_penalty,
                            c.discrete_entropy,
                            c.continuous_entropy};
  for (int i = 0; i < 7; ++i) {
    store_from_double(a.outputs[i], a.output_dtype, 0, values[i]);
  }
}

} // namespace cuda
} // namespace hee

// The hybrid loss's one-block kernels around the row passes: the sum of the
// row weights before them, and the finish after them, which adds the partial
// sums in order and combines the losses. Apart from forward_kernels.cuh
// because they are not templates: one translation unit (hybrid_entropy_cuda.cu)
// defines them.
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

__global__ void __launch_bounds__(kFinishThreads)
    finish_forward(FinishForwardArgs a) {
  const double entropy_sum =
      block_ordered_sum(a.entropy_partials, a.num_entropy_partials);
  const double log_std_sum =
      block_ordered_sum(a.log_std_partials, a.num_log_std_partials);
  if (threadIdx.x != 0) {
    return;
  }
  const double discrete_entropy = a.has_discrete
      ? entropy_sum / a.discrete_denominator.read()
      : 0.0;
  const double num_dims = static_cast<double>(a.log_std_dims);
  const double continuous_entropy = !a.has_continuous ? 0.0
      : a.divides_by_given_denominator
      ? math::gaussian_entropy_over(
            log_std_sum, a.shared_log_std, a.row_weight_sum.read(), num_dims,
            a.continuous_denominator.read())
      : math::gaussian_entropy(
            log_std_sum / a.continuous_denominator.read(), num_dims);
  const math::LossComponents c = math::combine_losses(
      a.coeff.read(), a.has_discrete, discrete_entropy, a.has_continuous,
      continuous_entropy, a.params);
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

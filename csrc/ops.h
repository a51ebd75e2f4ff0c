// Declarations shared by the schema, the backends, the meta kernels and the
// autograd kernel of hybrid_entropy_ext::hybrid_entropy_loss.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "entropy_math.h"

namespace hee {

// total, discrete, continuous, discrete_penalty, continuous_penalty,
// discrete_entropy, continuous_entropy (0-dim each), then the per-row
// statistics kept for the backward, row_stats [3, B]: row max, log of the
// shifted partition sum, row entropy ([3, 0] when logits is None).
constexpr int kNumLossOutputs = 7;
using LossForwardOutputs = std::tuple<
    at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
    at::Tensor, at::Tensor>;

// grad_logits, grad_log_std, grad_entropy_coeff; an input whose gradient was
// not requested (output_mask) gets an empty [0] tensor.
using LossBackwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Validates the forward op's arguments from metadata only (no device sync,
// symbolic sizes allowed): ValueError/TypeError naming the argument.
void check_loss_inputs(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier);

// float64 if either head is float64, else float32.
at::ScalarType loss_output_dtype(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std);

// The per-row statistics are kept in the accumulation type of the logits.
at::ScalarType row_stats_dtype(const at::Tensor& logits);

math::LossParams make_loss_params(
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier);

} // namespace hee

// Argument checks of the forward op, shared by every backend and the meta
// kernel. Only metadata is read, and sizes are compared as SymInts so that
// dynamic shapes under torch.compile / torch.export keep working.
#include <cmath>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "ops.h"

namespace hee {
namespace {

#define HEE_SYM_CHECK_VALUE(cond, ...) \
  TORCH_CHECK_VALUE((cond).expect_true(__FILE__, __LINE__), __VA_ARGS__)

void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(
      at::isFloatingType(t.scalar_type()), "hybrid_entropy_loss: ", name,
      " must be a floating tensor (float32, float64, bfloat16 or float16), "
      "got ",
      t.scalar_type());
}

void check_finite(double value, const char* name) {
  TORCH_CHECK_VALUE(
      std::isfinite(value), "hybrid_entropy_loss: ", name,
      " must be finite, got ", value);
}

void check_logits(const at::Tensor& logits) {
  check_floating(logits, "logits");
  TORCH_CHECK_VALUE(
      logits.dim() == 2, "hybrid_entropy_loss: logits must be 2-D [B, K], ",
      "got shape ", logits.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      logits.sym_size(0).sym_gt(0),
      "hybrid_entropy_loss: logits has an empty batch (B = 0); the batch mean "
      "of the entropy is undefined");
  HEE_SYM_CHECK_VALUE(
      logits.sym_size(1).sym_gt(0),
      "hybrid_entropy_loss: logits has zero actions (K = 0); a categorical "
      "distribution needs at least one action");
}

void check_log_std(const at::Tensor& log_std) {
  check_floating(log_std, "log_std");
  TORCH_CHECK_VALUE(
      log_std.dim() == 1 || log_std.dim() == 2,
      "hybrid_entropy_loss: log_std must be [B, D] or [D] (shared by the "
      "batch), got shape ",
      log_std.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      log_std.sym_size(-1).sym_gt(0),
      "hybrid_entropy_loss: log_std has zero action dimensions (D = 0)");
  if (log_std.dim() == 2) {
    HEE_SYM_CHECK_VALUE(
        log_std.sym_size(0).sym_gt(0),
        "hybrid_entropy_loss: log_std has an empty batch (B = 0); the batch "
        "mean of the entropy is undefined");
  }
}

void check_entropy_coeff(
    const at::Tensor& entropy_coeff, const std::optional<at::Tensor>& head) {
  check_floating(entropy_coeff, "entropy_coeff");
  TORCH_CHECK_VALUE(
      entropy_coeff.dim() == 0 ||
          (entropy_coeff.dim() == 1 &&
           entropy_coeff.sym_size(0).sym_eq(2).expect_true(__FILE__, __LINE__)),
      "hybrid_entropy_loss: entropy_coeff must be a Python float, a 0-dim "
      "tensor, or a tensor of shape [2] (discrete, continuous), got shape ",
      entropy_coeff.sym_sizes());
  if (head.has_value()) {
    TORCH_CHECK_VALUE(
        entropy_coeff.device() == head->device() || entropy_coeff.is_cpu(),
        "hybrid_entropy_loss: entropy_coeff must be on the device of the "
        "inputs (",
        head->device(), ") or on the CPU, got ", entropy_coeff.device());
  }
}

} // namespace

void check_loss_inputs(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  TORCH_CHECK_VALUE(
      logits.has_value() || log_std.has_value(),
      "hybrid_entropy_loss: logits and log_std are both None; pass at least "
      "one head");
  if (logits.has_value()) {
    check_logits(*logits);
  }
  if (log_std.has_value()) {
    check_log_std(*log_std);
  }
  if (logits.has_value() && log_std.has_value()) {
    TORCH_CHECK_VALUE(
        logits->device() == log_std->device(),
        "hybrid_entropy_loss: logits and log_std must be on the same device, "
        "got logits on ",
        logits->device(), " and log_std on ", log_std->device());
    if (log_std->dim() == 2) {
      HEE_SYM_CHECK_VALUE(
          logits->sym_size(0).sym_eq(log_std->sym_size(0)),
          "hybrid_entropy_loss: logits and log_std must have the same batch "
          "size, got logits ",
          logits->sym_sizes(), " and log_std ", log_std->sym_sizes());
    }
  }
  check_entropy_coeff(entropy_coeff, logits.has_value() ? logits : log_std);
  check_finite(discrete_entropy_weight, "discrete_entropy_weight");
  check_finite(continuous_entropy_weight, "continuous_entropy_weight");
  if (min_entropy_threshold.has_value()) {
    check_finite(*min_entropy_threshold, "min_entropy_threshold");
  }
  if (continuous_min_entropy_threshold.has_value()) {
    check_finite(
        *continuous_min_entropy_threshold, "continuous_min_entropy_threshold");
  }
  check_finite(penalty_multiplier, "penalty_multiplier");
}

at::ScalarType loss_output_dtype(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std) {
  const bool any_double =
      (logits.has_value() && logits->scalar_type() == at::kDouble) ||
      (log_std.has_value() && log_std->scalar_type() == at::kDouble);
  return any_double ? at::kDouble : at::kFloat;
}

at::ScalarType row_stats_dtype(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

math::LossParams make_loss_params(
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  math::LossParams params;
  params.discrete_weight = discrete_entropy_weight;
  params.continuous_weight = continuous_entropy_weight;
  params.has_discrete_threshold = min_entropy_threshold.has_value();
  params.discrete_threshold = min_entropy_threshold.value_or(0.0);
  params.has_continuous_threshold =
      continuous_min_entropy_threshold.has_value();
  params.continuous_threshold = continuous_min_entropy_threshold.value_or(0.0);
  params.penalty_multiplier = penalty_multiplier;
  return params;
}

} // namespace hee

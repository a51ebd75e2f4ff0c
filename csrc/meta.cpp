// Meta kernels: output shapes and dtypes from metadata alone, written with
// SymInts so that torch.compile (fake tensors) and torch.export (dynamic
// dims) trace the ops without running them.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops.h"

namespace hee {
namespace {

LossForwardOutputs hybrid_entropy_loss_meta(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  check_loss_inputs(
      logits, log_std, entropy_coeff, discrete_entropy_weight,
      continuous_entropy_weight, min_entropy_threshold,
      continuous_min_entropy_threshold, penalty_multiplier);
  const at::Tensor& head = logits.has_value() ? *logits : *log_std;
  const auto scalar_options =
      head.options().dtype(loss_output_dtype(logits, log_std));
  auto scalar = [&] { return at::empty({}, scalar_options); };
  at::Tensor row_logsumexp;
  at::Tensor row_entropy;
  if (logits.has_value()) {
    const auto row_options = logits->options().dtype(row_stats_dtype(*logits));
    row_logsumexp = at::empty_symint({logits->sym_size(0)}, row_options);
    row_entropy = at::empty_symint({logits->sym_size(0)}, row_options);
  } else {
    row_logsumexp = at::empty({0}, scalar_options);
    row_entropy = at::empty({0}, scalar_options);
  }
  return {scalar(), scalar(),      scalar(),     scalar(),   scalar(),
          scalar(), scalar(), row_logsumexp, row_entropy};
}

at::Tensor gradient_like(const std::optional<at::Tensor>& input, bool wanted) {
  if (wanted && input.has_value()) {
    return at::empty_symint(input->sym_sizes(), input->options());
  }
  // Not requested: an empty placeholder (schemas cannot return None).
  return at::empty({0}, input.has_value() ? input->options()
                                          : at::TensorOptions().device(at::kMeta));
}

LossBackwardOutputs hybrid_entropy_loss_backward_meta(
    const std::optional<at::Tensor>& /*grad_total*/,
    const std::optional<at::Tensor>& /*grad_discrete*/,
    const std::optional<at::Tensor>& /*grad_continuous*/,
    const std::optional<at::Tensor>& /*grad_discrete_penalty*/,
    const std::optional<at::Tensor>& /*grad_continuous_penalty*/,
    const std::optional<at::Tensor>& /*grad_discrete_entropy*/,
    const std::optional<at::Tensor>& /*grad_continuous_entropy*/,
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    const at::Tensor& /*row_logsumexp*/,
    const at::Tensor& /*row_entropy*/,
    const at::Tensor& /*discrete_entropy*/,
    const at::Tensor& /*continuous_entropy*/,
    double /*discrete_entropy_weight*/,
    double /*continuous_entropy_weight*/,
    std::optional<double> /*min_entropy_threshold*/,
    std::optional<double> /*continuous_min_entropy_threshold*/,
    double /*penalty_multiplier*/,
    std::array<bool, 3> output_mask) {
  return {
      gradient_like(logits, output_mask[0]),
      gradient_like(log_std, output_mask[1]),
      gradient_like(entropy_coeff, output_mask[2])};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Meta, m) {
  m.impl("hybrid_entropy_loss", &hybrid_entropy_loss_meta);
  m.impl("hybrid_entropy_loss_backward", &hybrid_entropy_loss_backward_meta);
}

} // namespace hee

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
  const at::Tensor row_stats = logits.has_value()
      ? at::empty_symint(
            {3, logits->sym_size(0)},
            logits->options().dtype(row_stats_dtype(*logits)))
      : at::empty({3, 0}, scalar_options);
  return {scalar(), scalar(), scalar(), scalar(),
          scalar(), scalar(), scalar(), row_stats};
}

// Mirrors the CPU kernel: a requested gradient is contiguous, or, where it
// is one value for every element (log_std, entropy_coeff), that value seen
// through all-zero strides; else an empty [0] placeholder (schemas cannot
// return None) in the input's dtype, or in entropy_coeff's when the head is
// None.
at::Tensor gradient_like(
    const std::optional<at::Tensor>& input,
    bool wanted,
    const at::Tensor& entropy_coeff,
    bool one_value) {
  if (wanted && input.has_value()) {
    if (one_value) {
      const c10::SmallVector<c10::SymInt, 4> zero_strides(
          input->dim(), c10::SymInt(0));
      return at::empty_strided_symint(
          input->sym_sizes(), zero_strides, input->options());
    }
    return at::empty_symint(input->sym_sizes(), input->options());
  }
  return at::empty(
      {0}, (input.has_value() ? *input : entropy_coeff).options());
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
    const at::Tensor& /*row_stats*/,
    const at::Tensor& /*discrete_entropy*/,
    const at::Tensor& /*continuous_entropy*/,
    double /*discrete_entropy_weight*/,
    double /*continuous_entropy_weight*/,
    std::optional<double> /*min_entropy_threshold*/,
    std::optional<double> /*continuous_min_entropy_threshold*/,
    double /*penalty_multiplier*/,
    std::array<bool, 3> output_mask) {
  return {
      gradient_like(logits, output_mask[0], entropy_coeff, /*one_value=*/false),
      gradient_like(log_std, output_mask[1], entropy_coeff, /*one_value=*/true),
      gradient_like(
          entropy_coeff, output_mask[2], entropy_coeff,
          /*one_value=*/entropy_coeff.dim() == 0)};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Meta, m) {
  m.impl("hybrid_entropy_loss", &hybrid_entropy_loss_meta);
  m.impl("hybrid_entropy_loss_backward", &hybrid_entropy_loss_backward_meta);
}

} // namespace hee

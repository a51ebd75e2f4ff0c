// Meta kernels: every output's shape, strides and dtype from the plan, with
// SymInts, so that torch.compile (fake tensors) and torch.export (dynamic
// dims) trace the ops without running them.
#include <ATen/EmptyTensor.h>
#include <torch/library.h>

#include "loss_plan.h"

namespace hee {
namespace {

at::Tensor empty_meta(const TensorSpec& spec) {
  return at::detail::empty_strided_symint_meta(
      spec.sizes, spec.strides, spec.dtype);
}

LossForwardOutputs hybrid_entropy_loss_meta(const LossForwardArgs& args) {
  const LossForwardPlan plan = plan_loss_forward(args);
  auto component = [&] { return empty_meta(plan.component); };
  return {component(), component(), component(), component(),
          component(), component(), component(), empty_meta(plan.row_stats)};
}

LossBackwardOutputs hybrid_entropy_loss_backward_meta(
    const LossBackwardArgs& args) {
  const LossBackwardPlan plan = plan_loss_backward(args);
  return {empty_meta(plan.grad_logits), empty_meta(plan.grad_log_std),
          empty_meta(plan.grad_entropy_coeff)};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Meta, m) {
  m.impl(
      "hybrid_entropy_loss", forward_kernel<&hybrid_entropy_loss_meta>);
  m.impl(
      "_hybrid_entropy_loss_backward",
      backward_kernel<&hybrid_entropy_loss_backward_meta>);
}

} // namespace hee

// Meta kernels: every output's shape, strides and dtype from the plan, with
// SymInts, so that torch.compile (fake tensors) and torch.export (dynamic
// dims) trace the ops without running them.
#include <ATen/EmptyTensor.h>
#include <torch/library.h>

#include "loss_plan.h"
#include "token_terms_op.h"
#include "token_terms_plan.h"

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
          component(), component(), component(), empty_meta(plan.row_stats),
          empty_meta(plan.discrete_entropy_per_head)};
}

LossBackwardOutputs hybrid_entropy_loss_backward_meta(
    const LossBackwardArgs& args) {
  const LossBackwardPlan plan = plan_loss_backward(args);
  return {empty_meta(plan.grad_logits), empty_meta(plan.grad_log_std),
          empty_meta(plan.grad_entropy_coeff)};
}

TokenTermsOutputs log_prob_and_entropy_meta(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  const TokenTermsForwardPlan plan = plan_token_terms_forward(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  return {empty_meta(plan.log_prob), empty_meta(plan.entropy),
          empty_meta(plan.row_stats)};
}

at::Tensor log_prob_and_entropy_backward_meta(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  return empty_meta(plan_token_terms_backward(
      grad_log_prob, grad_entropy, logits, actions, mask, row_stats,
      temperature, action_mask, discrete_sizes));
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Meta, m) {
  m.impl("log_prob_and_entropy", &log_prob_and_entropy_meta);
  m.impl(
      "_log_prob_and_entropy_backward", &log_prob_and_entropy_backward_meta);
  m.impl(
      "hybrid_entropy_loss", forward_kernel<&hybrid_entropy_loss_meta>);
  m.impl(
      "_hybrid_entropy_loss_backward",
      backward_kernel<&hybrid_entropy_loss_backward_meta>);
}

} // namespace hee

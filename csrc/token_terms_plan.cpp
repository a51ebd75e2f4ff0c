#include "token_terms_plan.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "checks.h"

namespace hee {
namespace {

constexpr const char* kForwardOp = "log_prob_and_entropy";
constexpr const char* kBackwardOp = "_log_prob_and_entropy_backward";

c10::SymIntArrayRef leading_sizes(const at::Tensor& logits) {
  return logits.sym_sizes().slice(0, logits.dim() - 1);
}

void check_logits(const at::Tensor& logits, const char* op) {
  check_floating(logits, op, "logits");
  TORCH_CHECK_VALUE(
      logits.dim() >= 1, op,
      ": logits must be [..., K] (at least 1-D), got a 0-dim tensor");
  TORCH_CHECK_VALUE(
      logits.sym_size(-1).sym_gt(0).expect_true(__FILE__, __LINE__), op,
      ": logits has zero actions (K = 0, its last dim); a categorical "
      "distribution needs at least one action");
}

void check_on_logits_device(
    const at::Tensor& t,
    const at::Tensor& logits,
    const char* op,
    const char* name) {
  TORCH_CHECK_VALUE(
      t.device() == logits.device(), op, ": ", name,
      " must be on the logits' device (", logits.device(), "), got ",
      t.device());
}

// A tensor of the logits' leading shape, on their device.
void check_row_tensor(
    const at::Tensor& t,
    const at::Tensor& logits,
    const char* op,
    const char* name) {
  TORCH_CHECK_VALUE(
      same_sizes(t.sym_sizes(), leading_sizes(logits)), op, ": ", name,
      " must have the logits' leading shape ", leading_sizes(logits),
      " (logits ", logits.sym_sizes(), "), got ", t.sym_sizes());
  check_on_logits_device(t, logits, op, name);
}

// actions: one per row, or with discrete_sizes one per sub-head of each row
// ([..., H]).
void check_actions_shape(
    const at::Tensor& actions,
    const at::Tensor& logits,
    at::OptionalIntArrayRef discrete_sizes,
    const char* op) {
  if (!discrete_sizes.has_value()) {
    check_row_tensor(actions, logits, op, "actions");
    return;
  }
  const int64_t num_heads = static_cast<int64_t>(discrete_sizes->size());
  c10::SymDimVector expected(
      leading_sizes(logits).begin(), leading_sizes(logits).end());
  expected.push_back(num_heads);
  TORCH_CHECK_VALUE(
      same_sizes(actions.sym_sizes(), expected), op,
      ": with discrete_sizes, actions must be [..., H]: the logits' leading "
      "shape and one action per sub-head, ", c10::SymIntArrayRef(expected),
      " (logits ", logits.sym_sizes(), ", H = ", num_heads, "), got ",
      actions.sym_sizes());
  check_on_logits_device(actions, logits, op, "actions");
}

void check_forward_args(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes,
    const char* op) {
  check_logits(logits, op);
  check_action_mask(action_mask, logits, op);
  if (discrete_sizes.has_value()) {
    check_discrete_sizes_sum_to(*discrete_sizes, logits.sym_size(-1), op);
  }
  if (actions.has_value()) {
    TORCH_CHECK_TYPE(
        actions->scalar_type() == at::kLong || actions->scalar_type() == at::kInt,
        op, ": actions must be int64 or int32, got ", actions->scalar_type());
    check_actions_shape(*actions, logits, discrete_sizes, op);
  }
  if (mask.has_value()) {
    TORCH_CHECK_TYPE(
        mask->scalar_type() == at::kBool, op, ": mask must be bool, got ",
        mask->scalar_type());
    check_row_tensor(*mask, logits, op, "mask");
  }
  TORCH_CHECK_VALUE(
      std::isfinite(temperature) && temperature > 0.0, op,
      ": temperature must be a finite number > 0, got ", temperature);
  // The kernels scale by c = 1 / T in the accumulation dtype, and the backward
  // multiplies c by the upstream gradients and by log p (clamped at -1e4):
  // c within [1 / sqrt(max), sqrt(max)] of that dtype keeps those products
  // finite for any upstream gradient below about sqrt(max) / 1e4, and keeps
  // c > 0, whose product with a -inf logit stays -inf (0 * -inf is NaN).
  const at::ScalarType acc_dtype = accumulation_dtype(logits.scalar_type());
  const double largest_scale = acc_dtype == at::kDouble
      ? std::sqrt(std::numeric_limits<double>::max())
      : std::sqrt(static_cast<double>(std::numeric_limits<float>::max()));
  const double scale = 1.0 / temperature;
  TORCH_CHECK_VALUE(
      scale <= largest_scale, op, ": temperature ", temperature,
      " is too small: 1 / temperature must be at most ", largest_scale,
      " in the logits' accumulation dtype (", acc_dtype, ")");
  TORCH_CHECK_VALUE(
      scale >= 1.0 / largest_scale, op, ": temperature ", temperature,
      " is too large: 1 / temperature must be at least ", 1.0 / largest_scale,
      " in the logits' accumulation dtype (", acc_dtype, ")");
}

TensorSpec contiguous_spec(
    c10::SymIntArrayRef sizes, at::ScalarType dtype, c10::Device device) {
  TensorSpec spec;
  spec.sizes.assign(sizes.begin(), sizes.end());
  spec.strides = contiguous_strides(sizes);
  spec.dtype = dtype;
  spec.device = device;
  return spec;
}

c10::SymInt num_rows(const at::Tensor& logits) {
  c10::SymInt rows = 1;
  for (const c10::SymInt& size : leading_sizes(logits)) {
    rows = rows * size;
  }
  return rows;
}

} // namespace

TokenTermsForwardPlan plan_token_terms_forward(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  check_forward_args(
      logits, actions, mask, temperature, action_mask, discrete_sizes,
      kForwardOp);
  const at::ScalarType acc = accumulation_dtype(logits.scalar_type());
  TokenTermsForwardPlan plan;
  plan.has_actions = actions.has_value();
  plan.has_mask = mask.has_value();
  plan.has_action_mask = action_mask.has_value();
  plan.num_heads = num_discrete_heads(discrete_sizes);
  const c10::SymInt no_rows = 0;
  plan.log_prob = plan.has_actions
      ? contiguous_spec(leading_sizes(logits), acc, logits.device())
      : contiguous_spec({&no_rows, 1}, acc, logits.device());
  plan.entropy = contiguous_spec(leading_sizes(logits), acc, logits.device());
  const c10::SymInt stats_sizes[2] = {3, num_rows(logits) * plan.num_heads};
  plan.row_stats = contiguous_spec(stats_sizes, acc, logits.device());
  const c10::SymInt head_terms_sizes[2] = {
      plan.num_heads > 1 ? plan.num_heads : 0, num_rows(logits)};
  plan.head_terms = contiguous_spec(head_terms_sizes, acc, logits.device());
  return plan;
}

TensorSpec plan_token_terms_backward(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  check_forward_args(
      logits, actions, mask, temperature, action_mask, discrete_sizes,
      kBackwardOp);
  const at::ScalarType acc = accumulation_dtype(logits.scalar_type());
  TORCH_CHECK_VALUE(
      !grad_log_prob.has_value() || actions.has_value(), kBackwardOp,
      ": grad_log_prob given without actions");
  for (const auto& [grad, name] :
       {std::pair{&grad_log_prob, "grad_log_prob"},
        std::pair{&grad_entropy, "grad_entropy"}}) {
    if (grad->has_value()) {
      check_floating(**grad, kBackwardOp, name);
      check_row_tensor(**grad, logits, kBackwardOp, name);
    }
  }
  const c10::SymInt stats_sizes[2] = {
      3, num_rows(logits) * num_discrete_heads(discrete_sizes)};
  TORCH_CHECK_VALUE(
      same_sizes(row_stats.sym_sizes(), stats_sizes) &&
          row_stats.is_contiguous() && row_stats.scalar_type() == acc &&
          row_stats.device() == logits.device(),
      kBackwardOp, ": row_stats must be the forward's: contiguous [3, ",
      stats_sizes[1], "] of ", acc, " on ", logits.device(), ", got ",
      row_stats.sym_sizes(), " of ", row_stats.scalar_type(), " on ",
      row_stats.device());
  return contiguous_spec(
      logits.sym_sizes(), logits.scalar_type(), logits.device());
}

TokenRows token_rows_for_kernels(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  TokenRows rows;
  const int64_t K = logits.size(-1);
  at::Tensor flat = logits.reshape({-1, K});
  rows.logits = K == 1 || flat.stride(1) == 1 ? flat : flat.contiguous();
  rows.heads = sub_head_columns(discrete_sizes, K);
  rows.has_sub_heads = discrete_sizes.has_value();
  if (actions.has_value()) {
    rows.actions = actions->reshape({-1, rows.num_action_columns()})
                       .to(at::kLong)
                       .contiguous();
  }
  if (mask.has_value()) {
    rows.mask = mask->reshape({-1}).contiguous();
  }
  if (action_mask.has_value()) {
    at::Tensor flat_mask = action_mask->reshape({-1, K});
    rows.action_mask =
        K == 1 || flat_mask.stride(1) == 1 ? flat_mask : flat_mask.contiguous();
  }
  rows.scale = 1.0 / temperature;
  return rows;
}

at::Tensor per_row_grad(
    const OptionalTensor& grad, int64_t num_rows, double scale,
    at::ScalarType dtype, c10::Device device) {
  if (!grad.has_value()) {
    return at::zeros({num_rows}, at::TensorOptions(dtype).device(device));
  }
  at::Tensor values = grad->reshape({-1}).to(dtype);
  return scale == 1.0 ? values.contiguous() : (values * scale).contiguous();
}

} // namespace hee

#include "loss_plan.h"

#include <ATen/Dispatch.h>
#include <ATen/core/TensorBody.h>
#include <c10/core/ScalarTypeToTypeMeta.h>

#include "accumulate_type.h"
#include "checks.h"

namespace hee {
c10::SymDimVector contiguous_strides(c10::SymIntArrayRef sizes) {
  c10::SymDimVector strides(sizes.size());
  c10::SymInt stride = 1;
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    strides[d] = stride;
    stride = stride * sizes[d].max(1);
  }
  return strides;
}

namespace {

TensorSpec scalar_spec(at::ScalarType dtype, c10::Device device) {
  return {{}, {}, dtype, device};
}

TensorSpec contiguous_like(const at::Tensor& t) {
  const c10::SymIntArrayRef sizes = t.sym_sizes();
  return {c10::SymDimVector(sizes.begin(), sizes.end()),
          contiguous_strides(sizes), t.scalar_type(), t.device()};
}

// One value seen through all-zero strides with t's shape.
TensorSpec broadcast_like(const at::Tensor& t) {
  const c10::SymIntArrayRef sizes = t.sym_sizes();
  return {c10::SymDimVector(sizes.begin(), sizes.end()),
          c10::SymDimVector(sizes.size(), c10::SymInt(0)), t.scalar_type(),
          t.device()};
}

// One value per position of t's leading dims, seen through a zero stride
// along its last: a [B, D] log_std's gradient with row weights (one value per
// row), or a parameterized [..., K, P] one's (one value per action, the same
// for its P parameters).
TensorSpec broadcast_along_last_dim(const at::Tensor& t) {
  const c10::SymIntArrayRef sizes = t.sym_sizes();
  c10::SymDimVector strides = contiguous_strides(sizes.slice(0, sizes.size() - 1));
  strides.push_back(c10::SymInt(0));
  return {c10::SymDimVector(sizes.begin(), sizes.end()), strides,
          t.scalar_type(), t.device()};
}

TensorSpec placeholder(at::ScalarType dtype, c10::Device device) {
  return {{0}, {1}, dtype, device};
}

} // namespace

at::ScalarType accumulation_dtype(at::ScalarType input_dtype) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input_dtype, "accumulation_dtype", [] {
        return c10::CppTypeToScalarType<acc_t<scalar_t>>::value;
      });
}

at::ScalarType loss_output_dtype(
    const OptionalTensor& logits,
    const OptionalTensor& log_std) {
  at::ScalarType dtype = at::kFloat;
  for (const OptionalTensor* head : {&logits, &log_std}) {
    if (head->has_value()) {
      dtype = c10::promoteTypes(
          dtype, accumulation_dtype((*head)->scalar_type()));
    }
  }
  return dtype;
}

int64_t num_discrete_heads(at::OptionalIntArrayRef discrete_sizes) {
  return discrete_sizes.has_value()
      ? static_cast<int64_t>(discrete_sizes->size())
      : 1;
}

int64_t num_discrete_heads(const LossHyperparameters& h) {
  return num_discrete_heads(h.discrete_sizes);
}

int64_t loss_row_stats_rows(const LossHyperparameters& h) {
  return h.parameterized_actions ? 4 : 3;
}

std::vector<DiscreteSubHead> sub_head_columns(
    at::OptionalIntArrayRef discrete_sizes,
    int64_t num_columns) {
  const at::IntArrayRef sizes = discrete_sizes.has_value()
      ? *discrete_sizes
      : at::IntArrayRef(num_columns);
  std::vector<DiscreteSubHead> heads(sizes.size());
  int64_t first_column = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    heads[i].first_column = first_column;
    heads[i].num_columns = sizes[i];
    first_column += sizes[i];
  }
  return heads;
}

std::vector<DiscreteSubHead> discrete_sub_heads(
    const LossHyperparameters& h,
    int64_t num_columns) {
  std::vector<DiscreteSubHead> heads =
      sub_head_columns(h.discrete_sizes, num_columns);
  for (size_t i = 0; i < heads.size(); ++i) {
    heads[i].threshold = h.discrete_head_thresholds.has_value()
        ? std::optional<double>((*h.discrete_head_thresholds.values)[i])
        : h.min_entropy_threshold;
  }
  return heads;
}

LossForwardPlan plan_loss_forward(const LossForwardArgs& args) {
  check_loss_forward_args(args);
  const at::Tensor& head = args.head();
  const at::ScalarType output_dtype =
      loss_output_dtype(args.logits, args.log_std);
  LossForwardPlan plan;
  plan.has_discrete = args.logits.has_value();
  plan.has_continuous = args.log_std.has_value();
  plan.has_row_weights = args.row_weights.has_value();
  plan.has_sub_heads = args.hyperparameters.discrete_sizes.has_value();
  plan.has_parameterized_actions = args.hyperparameters.parameterized_actions;
  plan.num_discrete_heads = num_discrete_heads(args.hyperparameters);
  plan.component = scalar_spec(output_dtype, head.device());
  if (plan.has_discrete) {
    const c10::SymInt rows = args.logits->sym_size(0) * plan.num_discrete_heads;
    plan.row_stats = {
        {loss_row_stats_rows(args.hyperparameters), rows},
        {rows, 1},
        accumulation_dtype(args.logits->scalar_type()),
        head.device()};
  } else {
    plan.row_stats = {{3, 0}, {1, 1}, output_dtype, head.device()};
  }
  const int64_t per_head = plan.has_sub_heads ? plan.num_discrete_heads : 0;
  plan.discrete_entropy_per_head = {
      {per_head}, {1}, output_dtype, head.device()};
  return plan;
}

LossBackwardPlan plan_loss_backward(const LossBackwardArgs& args) {
  check_loss_backward_args(args);
  const at::Tensor& head = args.head();
  // A missing head's placeholder takes the coefficient's dtype.
  const at::ScalarType missing_dtype = args.entropy_coeff.scalar_type();
  LossBackwardPlan plan;
  plan.has_discrete = args.logits.has_value();
  plan.has_continuous = args.log_std.has_value();
  plan.has_row_weights = args.row_weights.has_value();
  plan.has_parameterized_actions = args.hyperparameters.parameterized_actions;
  plan.computes_grad_logits = args.output_mask[0] && plan.has_discrete;
  plan.computes_grad_log_std = args.output_mask[1] && plan.has_continuous;
  plan.computes_grad_entropy_coeff = args.output_mask[2];
  plan.grad_logits = plan.computes_grad_logits
      ? contiguous_like(*args.logits)
      : placeholder(
            plan.has_discrete ? args.logits->scalar_type() : missing_dtype,
            head.device());
  plan.grad_log_std = !plan.computes_grad_log_std
      ? placeholder(
            plan.has_continuous ? args.log_std->scalar_type() : missing_dtype,
            head.device())
      : plan.has_parameterized_actions ||
          (plan.has_row_weights && log_std_has_own_rows(*args.log_std))
      ? broadcast_along_last_dim(*args.log_std)
      : broadcast_like(*args.log_std);
  if (plan.computes_grad_entropy_coeff) {
    plan.grad_entropy_coeff = contiguous_like(args.entropy_coeff);
    plan.grad_entropy_coeff.device = head.device();
  } else {
    plan.grad_entropy_coeff = placeholder(missing_dtype, head.device());
  }
  return plan;
}

at::Tensor logits_for_kernels(const at::Tensor& logits) {
  return logits.size(1) == 1 || logits.stride(1) == 1 ? logits
                                                      : logits.contiguous();
}

OptionalTensor action_mask_for_kernels(const OptionalTensor& action_mask) {
  return action_mask.has_value()
      ? OptionalTensor(logits_for_kernels(*action_mask))
      : std::nullopt;
}

bool log_std_has_own_rows(const at::Tensor& log_std) {
  return log_std.dim() == 2 &&
      !(log_std.sym_stride(0).sym_eq(0).guard_bool(__FILE__, __LINE__) &&
        log_std.sym_size(0).sym_gt(1).guard_bool(__FILE__, __LINE__));
}

KernelLogStd log_std_for_kernels(const at::Tensor& log_std) {
  if (log_std_has_own_rows(log_std)) {
    return {log_std.contiguous(), true};
  }
  const at::Tensor row = log_std.dim() == 1 ? log_std : log_std[0];
  return {row.contiguous().view({1, -1}), false};
}

KernelLogStd parameterized_log_std_for_kernels(const at::Tensor& log_std) {
  const int64_t row_width = log_std.size(-2) * log_std.size(-1);
  if (log_std.dim() == 3) {
    return {log_std.contiguous().view({log_std.size(0), row_width}), true};
  }
  return {log_std.contiguous().view({1, row_width}), false};
}

double discrete_entropy_mean_count(const at::Tensor& logits) {
  return static_cast<double>(logits.size(0));
}

double continuous_entropy_mean_count(const at::Tensor& log_std) {
  return log_std.dim() == 2 ? static_cast<double>(log_std.size(0)) : 1.0;
}

double batch_row_count(const OptionalTensor& logits, const OptionalTensor& log_std) {
  if (logits.has_value()) {
    return static_cast<double>(logits->size(0));
  }
  return log_std->dim() == 2 ? static_cast<double>(log_std->size(0)) : 1.0;
}

double read_host_value(const at::Tensor& t, int64_t element_offset) {
  TORCH_INTERNAL_ASSERT(t.is_cpu());
  return AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, t.scalar_type(), "read_host_value", [&] {
        return static_cast<double>(t.const_data_ptr<scalar_t>()[element_offset]);
      });
}

math::HeadCoefficients read_host_coefficients(const at::Tensor& entropy_coeff) {
  const double discrete = read_host_value(entropy_coeff);
  if (entropy_coeff.dim() == 0) {
    return {discrete, discrete};
  }
  return {discrete, read_host_value(entropy_coeff, entropy_coeff.stride(0))};
}

math::LossParams kernel_loss_params(const LossHyperparameters& h, math::LossParams params) {
  if (h.discrete_sizes.has_value()) {
    params.has_discrete_threshold = false;
  }
  return params;
}

} // namespace hee

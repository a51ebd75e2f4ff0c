// The CUDA forward and backward of hybrid_entropy_loss from their ATen
// arguments: the plan (loss_plan.h) checks them and says what to allocate;
// this file describes the call as raw pointers and launches what
// launch_plan.h chooses. Nothing is read back to the host: a coefficient on
// the device stays there and the loss is combined by the last kernel.
//
// Written over a Device that allocates, launches and describes the GPU:
//   at::Tensor empty(const TensorSpec&) const
//   at::Tensor empty_workspace(int64_t count, at::ScalarType) const
//   bool reads_coefficient_on_host(const at::Tensor& entropy_coeff) const
//   DeviceShape shape() const
//   launch(kernel, grid_blocks, block_threads, args) const   (a Launch)
// hybrid_entropy_cuda.cu gives the CUDA one; tests/cuda_emulation/ a host one
// that runs the same kernels over CPU tensors.
#pragma once

#include <array>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "../loss_plan.h"
#include "launch_plan.h"

namespace hee {
namespace cuda {

// A coefficient the device reads on the host (a 0-dim CPU tensor on a GPU:
// no sync), or one the kernels read where it lives.
template <typename Device>
Coefficients coefficients_of(
    const Device& device,
    const at::Tensor& entropy_coeff) {
  Coefficients c;
  if (device.reads_coefficient_on_host(entropy_coeff)) {
    c.host_values = read_host_coefficients(entropy_coeff);
    return c;
  }
  c.values = entropy_coeff.const_data_ptr();
  c.dtype = dtype_of(entropy_coeff.scalar_type());
  c.per_head = entropy_coeff.dim() == 1;
  c.stride = c.per_head ? entropy_coeff.stride(0) : 1;
  return c;
}

// Row weights as the kernels read them: contiguous, on the device. `kept`
// holds the contiguous copy, where one was made, for the call.
inline RowWeights row_weights_of(const OptionalTensor& t, at::Tensor& kept) {
  RowWeights w;
  if (t.has_value()) {
    kept = t->contiguous();
    w.values = kept.const_data_ptr();
    w.dtype = dtype_of(kept.scalar_type());
    w.count = kept.size(0);
  }
  return w;
}

inline DeviceScalar device_scalar(const OptionalTensor& t) {
  DeviceScalar s;
  if (t.has_value()) {
    s.values = t->const_data_ptr();
    s.dtype = dtype_of(t->scalar_type());
  }
  return s;
}

// The discrete heads as the launches take them (launch_plan.h): each
// sub-head's columns (one head of all without discrete_sizes), its
// normalizer (per row under an action mask, else one for every row) and its
// threshold.
inline std::vector<DiscreteHead> discrete_heads_for_kernels(
    const LossHyperparameters& h,
    int64_t num_cols,
    bool has_action_mask) {
  std::vector<DiscreteHead> heads;
  for (const DiscreteSubHead& sub_head : discrete_sub_heads(h, num_cols)) {
    DiscreteHead head;
    head.first_column = sub_head.first_column;
    head.num_cols = sub_head.num_columns;
    if (h.normalize_discrete_entropy && has_action_mask) {
      head.normalizes_rows = true;
    } else if (h.normalize_discrete_entropy) {
      head.entropy_scale = math::entropy_normalizer(sub_head.num_columns);
    }
    head.has_threshold = sub_head.threshold.has_value();
    head.threshold = sub_head.threshold.value_or(0.0);
    heads.push_back(head);
  }
  return heads;
}

// log_std of a parameterized policy as its kernels read it.
inline ActionParams action_params_of(const KernelLogStd& log_std, int64_t num_params) {
  ActionParams params;
  params.values = log_std.rows.const_data_ptr();
  params.dtype = dtype_of(log_std.rows.scalar_type());
  params.row_stride = log_std.per_sample ? log_std.rows.size(1) : 0;
  params.num_params = num_params;
  return params;
}

// SubHeadRecords as doubles of the workspace.
constexpr int64_t kDoublesPerHeadRecord =
    (sizeof(SubHeadRecord) + sizeof(double) - 1) / sizeof(double);

// The forward's outputs; `launch_plan`, where given, receives the plan of
// the last head's row launch.
template <typename Device>
LossForwardOutputs forward_on(
    const Device& device,
    const LossForwardArgs& args,
    ForwardLaunchPlan* launch_plan_out = nullptr) {
  const LossForwardPlan plan = plan_loss_forward(args);
  const LossHyperparameters& h = args.hyperparameters;

  ForwardProblem p;
  at::Tensor logits;
  at::Tensor row_stats = device.empty(plan.row_stats);
  at::Tensor discrete_entropy_per_head =
      device.empty(plan.discrete_entropy_per_head);
  const OptionalTensor action_mask = action_mask_for_kernels(args.action_mask);
  if (action_mask.has_value()) {
    p.allowed = action_mask->const_data_ptr<bool>();
    p.allowed_row_stride = action_mask->stride(0);
  }
  if (plan.has_discrete) {
    logits = logits_for_kernels(*args.logits);
    p.has_discrete = true;
    p.logits = logits.const_data_ptr();
    p.logits_dtype = dtype_of(logits.scalar_type());
    p.batch = logits.size(0);
    p.num_cols = logits.size(1);
    p.row_stride = logits.stride(0);
    p.row_stats = row_stats.mutable_data_ptr();
    p.heads = discrete_heads_for_kernels(
        h, p.num_cols, action_mask.has_value());
    p.stats_pitch = p.batch * static_cast<int64_t>(p.heads.size());
    p.has_sub_heads = plan.has_sub_heads;
    p.discrete_entropy_per_head = discrete_entropy_per_head.mutable_data_ptr();
  }
  KernelLogStd log_std;
  if (plan.has_parameterized_actions) {
    log_std = parameterized_log_std_for_kernels(*args.log_std);
    p.has_continuous = true;
    p.parameterized = true;
    p.action_params = action_params_of(log_std, args.log_std->size(-1));
  } else if (plan.has_continuous) {
    log_std = log_std_for_kernels(*args.log_std);
    p.has_continuous = true;
    p.log_std = log_std.rows.const_data_ptr();
    p.log_std_dtype = dtype_of(log_std.rows.scalar_type());
    p.log_std_rows = log_std.rows.size(0);
    p.log_std_dims = log_std.rows.size(1);
    p.per_sample_log_std = log_std.per_sample;
  }
  at::Tensor row_weights;
  p.row_weights = row_weights_of(args.row_weights, row_weights);
  p.mean_denominator = device_scalar(args.mean_denominator);
  p.row_count = batch_row_count(args.logits, args.log_std);
  p.coeff = coefficients_of(device, args.entropy_coeff);
  p.params = kernel_loss_params(h, args.params());
  std::array<at::Tensor, kNumLossOutputs> components;
  for (int i = 0; i < kNumLossOutputs; ++i) {
    components[i] = device.empty(plan.component);
    p.outputs[i] = components[i].mutable_data_ptr();
  }
  p.output_dtype = dtype_of(plan.component.dtype);

  const ForwardLaunches launches = plan_forward_launches(p, device.shape());
  // One allocation of doubles for the heads' partial sums, the weights' sum,
  // the sub-heads' records and the rows' normalizers; the splits' states
  // only when rows are split (SoftmaxState<acc> is three acc values).
  const bool weighted = p.row_weights.present();
  const int64_t num_records =
      p.has_sub_heads ? static_cast<int64_t>(p.heads.size()) : 0;
  const int64_t num_normalizers = launches.normalizes_rows
      ? static_cast<int64_t>(p.heads.size()) * p.batch
      : 0;
  const at::Tensor workspace = device.empty_workspace(
      launches.num_entropy_partials + launches.num_continuous_partials +
          (weighted ? 1 : 0) + num_records * kDoublesPerHeadRecord +
          num_normalizers,
      at::kDouble);
  ForwardWorkspace work;
  work.entropy_partials = workspace.mutable_data_ptr<double>();
  work.log_std_partials =
      work.entropy_partials + launches.num_entropy_partials;
  double* next = work.log_std_partials + launches.num_continuous_partials;
  if (weighted) {
    work.weight_sum = next++;
  }
  if (num_records > 0) {
    work.head_records = reinterpret_cast<SubHeadRecord*>(next);
    next += num_records * kDoublesPerHeadRecord;
  }
  if (num_normalizers > 0) {
    work.normalized_row_weights = next;
  }
  at::Tensor split_states;
  if (launches.num_split_states > 0) {
    split_states = device.empty_workspace(
        launches.num_split_states * 3, plan.row_stats.dtype);
    work.split_states = split_states.mutable_data_ptr();
  }
  launch_forward(p, launches, work, device);
  if (launch_plan_out != nullptr) {
    *launch_plan_out = launches.heads.back();
  }
  return {components[0], components[1], components[2], components[3],
          components[4], components[5], components[6], row_stats,
          discrete_entropy_per_head};
}

template <typename Device>
LossBackwardOutputs backward_on(
    const Device& device,
    const LossBackwardArgs& args) {
  const LossBackwardPlan plan = plan_loss_backward(args);
  const LossHyperparameters& h = args.hyperparameters;

  at::Tensor grad_logits = device.empty(plan.grad_logits);
  at::Tensor grad_log_std = device.empty(plan.grad_log_std);
  at::Tensor grad_entropy_coeff = device.empty(plan.grad_entropy_coeff);

  BackwardProblem p;
  BackwardCall call;
  p.has_discrete = plan.has_discrete;
  p.has_continuous = plan.has_continuous;
  // The logits are read for their gradient, and with parameterized actions
  // for log_std's too (p of each action).
  const bool reads_logits = plan.computes_grad_logits ||
      (plan.has_parameterized_actions && plan.computes_grad_log_std);
  const OptionalTensor action_mask = action_mask_for_kernels(args.action_mask);
  at::Tensor logits;
  if (reads_logits) {
    logits = logits_for_kernels(*args.logits);
    p.logits = logits.const_data_ptr();
    p.logits_dtype = dtype_of(logits.scalar_type());
    p.batch = logits.size(0);
    p.num_cols = logits.size(1);
    p.row_stride = logits.stride(0);
    p.row_stats = args.row_stats.const_data_ptr();
    if (plan.computes_grad_logits) {
      p.grad_logits = grad_logits.mutable_data_ptr();
    }
    p.grad_row_stride = p.num_cols;
    p.discrete_denominator.host_value =
        discrete_entropy_mean_count(*args.logits);
    if (action_mask.has_value()) {
      p.allowed = action_mask->const_data_ptr<bool>();
      p.allowed_row_stride = action_mask->stride(0);
    }
    call.heads = discrete_heads_for_kernels(
        h, p.num_cols, action_mask.has_value());
    p.stats_pitch = p.batch * static_cast<int64_t>(call.heads.size());
  }
  if (h.discrete_sizes.has_value()) {
    call.has_sub_heads = true;
    call.discrete_entropy_per_head =
        args.discrete_entropy_per_head.const_data_ptr();
    call.per_head_dtype = dtype_of(args.discrete_entropy_per_head.scalar_type());
    call.per_head_stride = args.discrete_entropy_per_head.stride(0);
  }
  at::Tensor action_param_rows;
  if (plan.has_parameterized_actions) {
    // log_std's gradient is written by the parameterized kernels, one value
    // per action (loss_plan.h), not by the Gaussian head's.
    call.parameterized = true;
    call.shared_action_params = args.log_std->dim() == 2;
    if (reads_logits) {
      const KernelLogStd log_std =
          parameterized_log_std_for_kernels(*args.log_std);
      call.action_params = action_params_of(log_std, args.log_std->size(-1));
      // The kernels read the contiguous rows while they run: keep them.
      action_param_rows = log_std.rows;
    }
    if (plan.computes_grad_log_std) {
      call.grad_actions = grad_log_std.mutable_data_ptr();
      call.grad_actions_dtype = dtype_of(grad_log_std.scalar_type());
    }
  } else if (plan.computes_grad_log_std) {
    p.grad_log_std = grad_log_std.mutable_data_ptr();
    p.grad_log_std_dtype = dtype_of(grad_log_std.scalar_type());
    p.continuous_denominator.host_value =
        continuous_entropy_mean_count(*args.log_std);
    p.log_std_count = p.continuous_denominator.host_value;
    if (plan.has_row_weights && log_std_has_own_rows(*args.log_std)) {
      p.grad_log_std_rows = args.log_std->size(0);
    }
  }
  // With row weights, launch_backward points the denominators at their sum;
  // with a given denominator, at it.
  p.mean_denominator = device_scalar(args.mean_denominator);
  p.row_weight_sum.host_value = batch_row_count(args.logits, args.log_std);
  at::Tensor row_weights;
  p.row_weights = row_weights_of(args.row_weights, row_weights);
  const bool normalizes_rows =
      h.normalize_discrete_entropy && action_mask.has_value() && reads_logits;
  const bool sums_action_grads = call.shared_action_params &&
      call.grad_actions != nullptr && reads_logits;
  const int64_t num_warp_sums = sums_action_grads
      ? parameterized_backward_grid(p.batch, p.num_cols, true, device.shape()) *
          kParameterizedWarps * p.num_cols
      : 0;
  const int64_t num_normalizers = normalizes_rows
      ? static_cast<int64_t>(call.heads.size()) * p.batch
      : 0;
  // One allocation of doubles for the weights' sum, the rows' normalizers
  // and the warps' sums of a shared log_std's gradient.
  at::Tensor workspace;
  const int64_t workspace_size = (p.row_weights.present() ? 1 : 0) +
      num_normalizers + num_warp_sums;
  if (workspace_size > 0) {
    workspace = device.empty_workspace(workspace_size, at::kDouble);
    double* next = workspace.mutable_data_ptr<double>();
    if (p.row_weights.present()) {
      p.weight_sum = next++;
    }
    if (num_normalizers > 0) {
      call.normalized_row_weights = next;
      next += num_normalizers;
    }
    if (num_warp_sums > 0) {
      call.warp_action_grads = next;
    }
  }
  if (plan.computes_grad_entropy_coeff) {
    p.grad_coeff = grad_entropy_coeff.mutable_data_ptr();
    p.grad_coeff_dtype = dtype_of(grad_entropy_coeff.scalar_type());
  }
  for (int i = 0; i < kNumLossOutputs; ++i) {
    p.upstream[i] = device_scalar(args.grads[i]);
  }
  p.discrete_entropy = device_scalar(args.discrete_entropy);
  p.continuous_entropy = device_scalar(args.continuous_entropy);
  p.coeff = coefficients_of(device, args.entropy_coeff);
  p.params = kernel_loss_params(h, args.params());
  launch_backward(p, call, device.shape(), device);
  return {grad_logits, grad_log_std, grad_entropy_coeff};
}

} // namespace cuda
} // namespace hee

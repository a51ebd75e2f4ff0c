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

// Sub-heads (discrete_sizes), normalize_discrete_entropy and
// parameterized_actions have CPU kernels only so far.
inline void check_cpu_only_arguments(const LossHyperparameters& h) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      !h.discrete_sizes.has_value(),
      "hybrid_entropy_loss: discrete_sizes (discrete sub-heads) has no CUDA "
      "kernel yet; compute the loss of a multi-discrete head on the CPU");
  TORCH_CHECK_NOT_IMPLEMENTED(
      !h.normalize_discrete_entropy,
      "hybrid_entropy_loss: normalize_discrete_entropy has no CUDA kernel "
      "yet; compute the normalized loss on the CPU");
  TORCH_CHECK_NOT_IMPLEMENTED(
      !h.parameterized_actions,
      "hybrid_entropy_loss: parameterized_actions has no CUDA kernel yet; "
      "compute the loss of a parameterized policy on the CPU");
}

// The forward's outputs; `launch_plan`, where given, receives the plan the
// launches followed.
template <typename Device>
LossForwardOutputs forward_on(
    const Device& device,
    const LossForwardArgs& args,
    ForwardLaunchPlan* launch_plan_out = nullptr) {
  check_cpu_only_arguments(args.hyperparameters);
  const LossForwardPlan plan = plan_loss_forward(args);

  ForwardProblem p;
  at::Tensor logits;
  at::Tensor row_stats = device.empty(plan.row_stats);
  if (plan.has_discrete) {
    logits = logits_for_kernels(*args.logits);
    p.has_discrete = true;
    p.logits = logits.const_data_ptr();
    p.logits_dtype = dtype_of(logits.scalar_type());
    p.batch = logits.size(0);
    p.num_cols = logits.size(1);
    p.row_stride = logits.stride(0);
    p.row_stats = row_stats.mutable_data_ptr();
  }
  const OptionalTensor action_mask = action_mask_for_kernels(args.action_mask);
  if (action_mask.has_value()) {
    p.allowed = action_mask->const_data_ptr<bool>();
    p.allowed_row_stride = action_mask->stride(0);
  }
  KernelLogStd log_std;
  if (plan.has_continuous) {
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
  p.params = args.params();
  std::array<at::Tensor, kNumLossOutputs> components;
  for (int i = 0; i < kNumLossOutputs; ++i) {
    components[i] = device.empty(plan.component);
    p.outputs[i] = components[i].mutable_data_ptr();
  }
  p.output_dtype = dtype_of(plan.component.dtype);

  const ForwardLaunchPlan launch_plan =
      plan_forward_launch(p, device.shape());
  // One allocation for both heads' partial sums (and the weights' sum); the
  // splits' states only when rows are split (SoftmaxState<acc> is three acc
  // values).
  const bool weighted = p.row_weights.present();
  const at::Tensor partials = device.empty_workspace(
      launch_plan.num_entropy_partials + launch_plan.num_log_std_blocks +
          (weighted ? 1 : 0),
      at::kDouble);
  at::Tensor split_states;
  ForwardWorkspace work;
  work.entropy_partials = partials.mutable_data_ptr<double>();
  work.log_std_partials =
      work.entropy_partials + launch_plan.num_entropy_partials;
  if (weighted) {
    work.weight_sum = work.log_std_partials + launch_plan.num_log_std_blocks;
  }
  if (launch_plan.num_split_states > 0) {
    split_states = device.empty_workspace(
        launch_plan.num_split_states * 3, plan.row_stats.dtype);
    work.split_states = split_states.mutable_data_ptr();
  }
  launch_forward(p, launch_plan, work, device);
  if (launch_plan_out != nullptr) {
    *launch_plan_out = launch_plan;
  }
  return {components[0], components[1], components[2], components[3],
          components[4], components[5], components[6], row_stats,
          device.empty(plan.discrete_entropy_per_head)};
}

template <typename Device>
LossBackwardOutputs backward_on(
    const Device& device,
    const LossBackwardArgs& args) {
  check_cpu_only_arguments(args.hyperparameters);
  const LossBackwardPlan plan = plan_loss_backward(args);

  at::Tensor grad_logits = device.empty(plan.grad_logits);
  at::Tensor grad_log_std = device.empty(plan.grad_log_std);
  at::Tensor grad_entropy_coeff = device.empty(plan.grad_entropy_coeff);

  BackwardProblem p;
  p.has_discrete = plan.has_discrete;
  p.has_continuous = plan.has_continuous;
  at::Tensor logits;
  if (plan.computes_grad_logits) {
    logits = logits_for_kernels(*args.logits);
    p.logits = logits.const_data_ptr();
    p.logits_dtype = dtype_of(logits.scalar_type());
    p.batch = logits.size(0);
    p.num_cols = logits.size(1);
    p.row_stride = logits.stride(0);
    p.row_stats = args.row_stats.const_data_ptr();
    p.grad_logits = grad_logits.mutable_data_ptr();
    p.discrete_denominator.host_value =
        discrete_entropy_mean_count(*args.logits);
  }
  const OptionalTensor action_mask = action_mask_for_kernels(args.action_mask);
  if (plan.computes_grad_logits && action_mask.has_value()) {
    p.allowed = action_mask->const_data_ptr<bool>();
    p.allowed_row_stride = action_mask->stride(0);
  }
  if (plan.computes_grad_log_std) {
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
  at::Tensor weight_sum;
  p.row_weights = row_weights_of(args.row_weights, row_weights);
  if (p.row_weights.present()) {
    weight_sum = device.empty_workspace(1, at::kDouble);
    p.weight_sum = weight_sum.mutable_data_ptr<double>();
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
  p.params = args.params();
  launch_backward(p, device.shape(), device);
  return {grad_logits, grad_log_std, grad_entropy_coeff};
}

} // namespace cuda
} // namespace hee

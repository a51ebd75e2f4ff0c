// CUDA kernels of hybrid_entropy_loss and its backward: ATen glue only. The
// plan (loss_plan.h) checks the inputs and says what to allocate; this file
// allocates on the current device, describes the call as raw pointers and
// launches, on the current stream, what launch_plan.h chooses. Nothing is
// read back to the host: a coefficient on the device stays there, the loss
// is combined by the last kernel, and a step that calls the op can be
// captured in a CUDA graph.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/EmptyTensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../loss_plan.h"
#include "launch_plan.h"

namespace hee {
namespace cuda {
namespace {

DType dtype_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return DType::kFloat;
    case at::kDouble:
      return DType::kDouble;
    case at::kHalf:
      return DType::kHalf;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK(false, "hybrid_entropy_loss: unsupported dtype ", dtype);
  return DType::kFloat;
}

at::Tensor empty_cuda(const TensorSpec& spec) {
  return at::detail::empty_strided_cuda(
      C10_AS_INTARRAYREF_SLOW(spec.sizes),
      C10_AS_INTARRAYREF_SLOW(spec.strides), spec.dtype, spec.device);
}

at::Tensor empty_doubles(int64_t count, c10::Device device) {
  return at::detail::empty_cuda({count}, at::kDouble, device, std::nullopt);
}

// A 0-dim CPU coefficient is read here, on the host (no device sync); a
// device one is read by the kernels.
Coefficients coefficients_of(const at::Tensor& entropy_coeff) {
  Coefficients c;
  if (entropy_coeff.is_cpu()) {
    c.host_values = read_host_coefficients(entropy_coeff);
    return c;
  }
  c.values = entropy_coeff.const_data_ptr();
  c.dtype = dtype_of(entropy_coeff.scalar_type());
  c.per_head = entropy_coeff.dim() == 1;
  c.stride = c.per_head ? entropy_coeff.stride(0) : 1;
  return c;
}

DeviceScalar device_scalar(const OptionalTensor& t) {
  DeviceScalar s;
  if (t.has_value()) {
    s.values = t->const_data_ptr();
    s.dtype = dtype_of(t->scalar_type());
  }
  return s;
}

// Launches on the current stream and checks the launch.
struct StreamLaunch {
  cudaStream_t stream;

  template <typename Args>
  void operator()(
      void (*kernel)(Args),
      int64_t grid_blocks,
      int block_threads,
      const Args& args) const {
    TORCH_INTERNAL_ASSERT(
        grid_blocks > 0 && grid_blocks <= std::numeric_limits<int32_t>::max());
    kernel<<<static_cast<unsigned>(grid_blocks), block_threads, 0, stream>>>(
        args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

StreamLaunch current_stream_launch() {
  return {at::cuda::getCurrentCUDAStream().stream()};
}

DeviceShape current_device_shape() {
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  return {props->multiProcessorCount, props->maxThreadsPerMultiProcessor};
}

LossForwardOutputs hybrid_entropy_loss_cuda(const LossForwardArgs& args) {
  const LossForwardPlan plan = plan_loss_forward(args);
  const c10::Device device = args.head().device();
  const c10::cuda::CUDAGuard device_guard(device);

  ForwardProblem p;
  at::Tensor logits;
  at::Tensor row_stats = empty_cuda(plan.row_stats);
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
  p.coeff = coefficients_of(args.entropy_coeff);
  p.params = args.params();
  std::array<at::Tensor, kNumLossOutputs> components;
  for (int i = 0; i < kNumLossOutputs; ++i) {
    components[i] = empty_cuda(plan.component);
    p.outputs[i] = components[i].mutable_data_ptr();
  }
  p.output_dtype = dtype_of(plan.component.dtype);

  const ForwardLaunchPlan launch_plan =
      plan_forward_launch(p, current_device_shape());
  // One allocation for both heads' partial sums; the splits' states only when
  // rows are split (SoftmaxState<acc> is three acc values).
  const at::Tensor partials = empty_doubles(
      launch_plan.num_entropy_partials + launch_plan.num_log_std_blocks,
      device);
  at::Tensor split_states;
  ForwardWorkspace work;
  work.entropy_partials = partials.mutable_data_ptr<double>();
  work.log_std_partials =
      work.entropy_partials + launch_plan.num_entropy_partials;
  if (launch_plan.num_split_states > 0) {
    split_states = at::detail::empty_cuda(
        {launch_plan.num_split_states * 3}, plan.row_stats.dtype, device,
        std::nullopt);
    work.split_states = split_states.mutable_data_ptr();
  }
  launch_forward(p, launch_plan, work, current_stream_launch());
  return {components[0], components[1], components[2], components[3],
          components[4], components[5], components[6], row_stats};
}

LossBackwardOutputs hybrid_entropy_loss_backward_cuda(
    const LossBackwardArgs& args) {
  const LossBackwardPlan plan = plan_loss_backward(args);
  const c10::Device device = args.head().device();
  const c10::cuda::CUDAGuard device_guard(device);

  at::Tensor grad_logits = empty_cuda(plan.grad_logits);
  at::Tensor grad_log_std = empty_cuda(plan.grad_log_std);
  at::Tensor grad_entropy_coeff = empty_cuda(plan.grad_entropy_coeff);

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
    p.discrete_mean_count = discrete_entropy_mean_count(*args.logits);
  }
  if (plan.computes_grad_log_std) {
    p.grad_log_std = grad_log_std.mutable_data_ptr();
    p.grad_log_std_dtype = dtype_of(grad_log_std.scalar_type());
    p.continuous_mean_count = continuous_entropy_mean_count(*args.log_std);
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
  p.coeff = coefficients_of(args.entropy_coeff);
  p.params = args.params();
  launch_backward(p, current_device_shape(), current_stream_launch());
  return {grad_logits, grad_log_std, grad_entropy_coeff};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CUDA, m) {
  m.impl("hybrid_entropy_loss", forward_kernel<&hybrid_entropy_loss_cuda>);
  m.impl(
      "_hybrid_entropy_loss_backward",
      backward_kernel<&hybrid_entropy_loss_backward_cuda>);
}

} // namespace cuda
} // namespace hee

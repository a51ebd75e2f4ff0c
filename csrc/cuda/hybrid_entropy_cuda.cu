// The CUDA kernels of hybrid_entropy_loss and its backward, registered: the
// device that loss_calls.h runs them on allocates on the current CUDA device
// and launches on its current stream. Nothing is read back to the host, so a
// step that calls the op can be captured in a CUDA graph.
#include <limits>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/EmptyTensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "loss_calls.h"

namespace hee {
namespace cuda {
namespace {

struct CudaDevice {
  c10::Device device;
  cudaStream_t stream;

  static CudaDevice current(c10::Device device) {
    return {device, at::cuda::getCurrentCUDAStream().stream()};
  }

  at::Tensor empty(const TensorSpec& spec) const {
    return at::detail::empty_strided_cuda(
        C10_AS_INTARRAYREF_SLOW(spec.sizes),
        C10_AS_INTARRAYREF_SLOW(spec.strides), spec.dtype, spec.device);
  }

  at::Tensor empty_workspace(int64_t count, at::ScalarType dtype) const {
    return at::detail::empty_cuda({count}, dtype, device, std::nullopt);
  }

  // A 0-dim CPU coefficient is read on the host (no device sync).
  bool reads_coefficient_on_host(const at::Tensor& entropy_coeff) const {
    return entropy_coeff.is_cpu();
  }

  DeviceShape shape() const {
    const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
    return {props->multiProcessorCount, props->maxThreadsPerMultiProcessor};
  }

  // Launches on the stream and checks the launch.
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

LossForwardOutputs hybrid_entropy_loss_cuda(const LossForwardArgs& args) {
  const c10::Device device = args.head().device();
  const c10::cuda::CUDAGuard device_guard(device);
  return forward_on(CudaDevice::current(device), args);
}

LossBackwardOutputs hybrid_entropy_loss_backward_cuda(
    const LossBackwardArgs& args) {
  const c10::Device device = args.head().device();
  const c10::cuda::CUDAGuard device_guard(device);
  return backward_on(CudaDevice::current(device), args);
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

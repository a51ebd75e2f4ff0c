// The CUDA kernels of hybrid_entropy_loss and its backward, registered on
// the device of cuda_device.h. Nothing is read back to the host, so a step
// that calls the op can be captured in a CUDA graph.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_device.h"
#include "loss_calls.h"

namespace hee {
namespace cuda {
namespace {

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

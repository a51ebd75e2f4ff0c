// The CUDA device that the glue of both ops (loss_calls.h,
// token_terms_calls.h) runs its kernels on: it allocates on the current CUDA
// device and launches on its current stream.
#pragma once

#include <limits>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/EmptyTensor.h>
#include <c10/cuda/CUDAException.h>

#include "../loss_plan.h"
#include "launch_shapes.h"

namespace hee {
namespace cuda {

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

} // namespace cuda
} // namespace hee

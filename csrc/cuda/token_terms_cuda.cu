// The CUDA kernels of log_prob_and_entropy and its backward, registered on
// the device of hybrid_entropy_cuda.cu (current CUDA device and stream).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_device.h"
#include "token_terms_calls.h"

namespace hee {
namespace cuda {
namespace {

TokenTermsOutputs log_prob_and_entropy_cuda(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return token_terms_forward_on(
      CudaDevice::current(logits.device()), logits, actions, mask,
      temperature, action_mask, discrete_sizes);
}

at::Tensor log_prob_and_entropy_backward_cuda(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return token_terms_backward_on(
      CudaDevice::current(logits.device()), grad_log_prob, grad_entropy,
      logits, actions, mask, row_stats, temperature, action_mask,
      discrete_sizes);
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CUDA, m) {
  m.impl("log_prob_and_entropy", &log_prob_and_entropy_cuda);
  m.impl("_log_prob_and_entropy_backward", &log_prob_and_entropy_backward_cuda);
}

} // namespace cuda
} // namespace hee

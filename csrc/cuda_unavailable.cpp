// In a build without CUDA kernels, CUDA tensors reach these instead of the
// dispatcher's generic "could not run ... with arguments from the 'CUDA'
// backend": an error that says the library was built without CUDA and how to
// rebuild it with.
#ifndef HEE_WITH_CUDA

#include <torch/library.h>

#include "op_signatures.h"

namespace hee {
namespace {

[[noreturn]] void built_without_cuda() {
  TORCH_CHECK_NOT_IMPLEMENTED(
      false,
      "hybrid_entropy_ext was built without its CUDA kernels, so it cannot "
      "run on CUDA tensors. Rebuild it with a CUDA build of torch and a CUDA "
      "toolkit: HEE_CUDA=1 CUDA_HOME=<toolkit root> pip install "
      "--no-build-isolation --no-deps --force-reinstall <source directory> "
      "(HEE_CUDA=1 makes the build fail, saying why, if CUDA cannot be "
      "built)");
}

LossForwardOutputs forward_without_cuda(const LossForwardArgs&) {
  built_without_cuda();
}

LossBackwardOutputs backward_without_cuda(const LossBackwardArgs&) {
  built_without_cuda();
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CUDA, m) {
  m.impl("hybrid_entropy_loss", forward_kernel<&forward_without_cuda>);
  m.impl(
      "_hybrid_entropy_loss_backward",
      backward_kernel<&backward_without_cuda>);
}

} // namespace hee

#endif // HEE_WITH_CUDA

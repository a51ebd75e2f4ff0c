// The schema of hybrid_entropy_ext's ops, and the calls through the
// dispatcher (op_signatures.h). Kernels live beside it: cpu/ (CPU), meta.cpp
// (Meta, for torch.compile / torch.export), autograd.cpp (Autograd).
#include <Python.h>
#include <dlfcn.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "cpu/isa.h"
#include "op_signatures.h"

// An empty Python module, so that `import hybrid_entropy_ext._C` loads this
// library (and runs the registrations below). PyModule_Create2 is looked up in
// the importing interpreter rather than linked: the library references no
// libpython symbol, so a C++ program can dlopen it (RTLD_NOW included) with no
// Python in the process.
PyMODINIT_FUNC PyInit__C(void) {
  using CreateModuleFn = PyObject* (*)(PyModuleDef*, int);
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  const auto create_module = reinterpret_cast<CreateModuleFn>(
      dlsym(RTLD_DEFAULT, "PyModule_Create2"));
  return create_module == nullptr
      ? nullptr
      : create_module(&module_def, PYTHON_ABI_VERSION);
}

TORCH_LIBRARY(hybrid_entropy_ext, m) {
  m.def(
      "hybrid_entropy_loss(Tensor? logits, Tensor? log_std, "
      "Tensor entropy_coeff, float discrete_entropy_weight=1.0, "
      "float continuous_entropy_weight=0.5, "
      "float? min_entropy_threshold=0.1, "
      "float? continuous_min_entropy_threshold=0.1, "
      "float penalty_multiplier=3.0) -> (Tensor total, Tensor discrete, "
      "Tensor continuous, Tensor discrete_penalty, "
      "Tensor continuous_penalty, Tensor discrete_entropy, "
      "Tensor continuous_entropy, Tensor row_stats)",
      {at::Tag::pt2_compliant_tag});
  // Internal (leading underscore, as torchvision's _roi_align_backward):
  // called by the forward's backward node with what the forward saved.
  m.def(
      "_hybrid_entropy_loss_backward(Tensor? grad_total, "
      "Tensor? grad_discrete, Tensor? grad_continuous, "
      "Tensor? grad_discrete_penalty, Tensor? grad_continuous_penalty, "
      "Tensor? grad_discrete_entropy, Tensor? grad_continuous_entropy, "
      "Tensor? logits, Tensor? log_std, Tensor entropy_coeff, "
      "Tensor row_stats, Tensor discrete_entropy, "
      "Tensor continuous_entropy, float discrete_entropy_weight, "
      "float continuous_entropy_weight, float? min_entropy_threshold, "
      "float? continuous_min_entropy_threshold, float penalty_multiplier, "
      "bool[3] output_mask) -> (Tensor grad_logits, Tensor grad_log_std, "
      "Tensor grad_entropy_coeff)",
      {at::Tag::pt2_compliant_tag});
  // Which build of the CPU row kernels this process runs (for diagnostics),
  // and, internal, a switch to another one (for tests and comparisons;
  // ValueError if this CPU lacks it).
  m.def("cpu_isa() -> str", []() -> std::string {
    return hee::cpu::cpu_isa_name(hee::cpu::selected_cpu_isa());
  });
  m.def("_set_cpu_isa(str isa) -> ()", [](const std::string& name) {
    hee::cpu::select_cpu_isa(name);
  });
  // Whether this library was built with its CUDA kernels (setup.py).
  m.def("_cuda_kernels_built() -> bool", []() -> bool {
#ifdef HEE_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}

namespace hee {

LossForwardOutputs call_forward_op(const LossForwardArgs& args) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("hybrid_entropy_ext::hybrid_entropy_loss", "")
          .typed<LossForwardSignature>();
  const math::LossParams& p = args.params;
  return op.call(
      args.logits, args.log_std, args.entropy_coeff, p.discrete_weight,
      p.continuous_weight, discrete_threshold_of(p),
      continuous_threshold_of(p), p.penalty_multiplier);
}

LossBackwardOutputs call_backward_op(const LossBackwardArgs& args) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(
              "hybrid_entropy_ext::_hybrid_entropy_loss_backward", "")
          .typed<LossBackwardSignature>();
  const math::LossParams& p = args.params;
  return op.call(
      args.grads[0], args.grads[1], args.grads[2], args.grads[3],
      args.grads[4], args.grads[5], args.grads[6], args.logits, args.log_std,
      args.entropy_coeff, args.row_stats, args.discrete_entropy,
      args.continuous_entropy, p.discrete_weight, p.continuous_weight,
      discrete_threshold_of(p), continuous_threshold_of(p),
      p.penalty_multiplier, args.output_mask);
}

} // namespace hee

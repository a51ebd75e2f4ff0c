// The schema of hybrid_entropy_ext's ops. Kernels live beside it:
// cpu/ (CPU), meta.cpp (Meta, for torch.compile / torch.export),
// autograd.cpp (Autograd).
#include <Python.h>
#include <dlfcn.h>

#include <torch/library.h>

#include "cpu/isa.h"

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
  m.def(
      "hybrid_entropy_loss_backward(Tensor? grad_total, "
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
  // Which build of the CPU row kernels this process runs (for diagnostics
  // and for tests that force one with HEE_CPU_ISA).
  m.def("cpu_isa() -> str", []() -> std::string {
    return hee::cpu::cpu_isa_name(hee::cpu::selected_cpu_isa());
  });
}

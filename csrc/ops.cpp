// The schemas of hybrid_entropy_ext's ops, written out from their argument
// lists (op_arguments.h), and the calls through the dispatcher. Kernels live
// beside it: cpu/ (CPU), cuda/ (CUDA), meta.cpp (Meta, for torch.compile /
// torch.export), autograd.cpp (Autograd).
#include <Python.h>
#include <dlfcn.h>

#include <tuple>
#include <utility>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "cpu/isa.h"
#include "op_signatures.h"
#include "token_terms_op.h"

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
      hee::loss_forward_schema("hybrid_entropy_loss").c_str(),
      {at::Tag::pt2_compliant_tag});
  // Internal (leading underscore, as torchvision's _roi_align_backward):
  // called by the forward's backward node with what the forward saved.
  m.def(
      hee::loss_backward_schema("_hybrid_entropy_loss_backward").c_str(),
      {at::Tag::pt2_compliant_tag});
  // The per-token terms of a categorical policy (docs/design.md, "Per-token
  // terms"): log_prob is [0] without actions (the Python wrapper returns
  // None); row_stats, [3, H * N] (H sub-heads, 1 without discrete_sizes), is
  // what the backward reads.
  m.def(hee::kTokenTermsForwardSchema, {at::Tag::pt2_compliant_tag});
  m.def(hee::kTokenTermsBackwardSchema, {at::Tag::pt2_compliant_tag});
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
namespace {

// The arguments' tuple of references, in schema order, for std::apply.
template <typename T, std::size_t N, std::size_t... I>
auto array_references(const std::array<T, N>& values, std::index_sequence<I...>) {
  return std::forward_as_tuple(values[I]...);
}

#define HEE_INPUT_REFERENCE(type, name, ...) , std::forward_as_tuple(args.name)
#define HEE_TRAILING_REFERENCE(kind, type, name, ...)               \
  , std::forward_as_tuple(                                          \
        HEE_WHEN(kind, HYPERPARAMETER, args.hyperparameters.name)   \
            HEE_WHEN(kind, INPUT, args.name))
#define HEE_SAVED_OUTPUT_REFERENCE(name, is_output) \
  , std::forward_as_tuple(args.name)

auto argument_references(const LossForwardArgs& args) {
  return std::tuple_cat(
      std::tuple<>() HEE_DIFFERENTIABLE_INPUTS(HEE_INPUT_REFERENCE)
          HEE_TRAILING_ARGUMENTS(HEE_TRAILING_REFERENCE));
}

auto argument_references(const LossBackwardArgs& args) {
  return std::tuple_cat(
      array_references(args.grads, std::make_index_sequence<kNumLossOutputs>())
          HEE_DIFFERENTIABLE_INPUTS(HEE_INPUT_REFERENCE)
              HEE_SAVED_OUTPUTS(HEE_SAVED_OUTPUT_REFERENCE),
      std::forward_as_tuple(args.output_mask)
          HEE_TRAILING_ARGUMENTS(HEE_TRAILING_REFERENCE));
}

#undef HEE_INPUT_REFERENCE
#undef HEE_TRAILING_REFERENCE
#undef HEE_SAVED_OUTPUT_REFERENCE

} // namespace

LossForwardOutputs call_forward_op(const LossForwardArgs& args) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("hybrid_entropy_ext::hybrid_entropy_loss", "")
          .typed<LossForwardSignature>();
  return std::apply(
      [](const auto&... arguments) { return op.call(arguments...); },
      argument_references(args));
}

LossBackwardOutputs call_backward_op(const LossBackwardArgs& args) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(
              "hybrid_entropy_ext::_hybrid_entropy_loss_backward", "")
          .typed<LossBackwardSignature>();
  return std::apply(
      [](const auto&... arguments) { return op.call(arguments...); },
      argument_references(args));
}

TokenTermsOutputs call_token_terms_forward(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("hybrid_entropy_ext::log_prob_and_entropy", "")
          .typed<TokenTermsForwardSignature>();
  return op.call(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
}

at::Tensor call_token_terms_backward(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(
              "hybrid_entropy_ext::_log_prob_and_entropy_backward", "")
          .typed<TokenTermsBackwardSignature>();
  return op.call(
      grad_log_prob, grad_entropy, logits, actions, mask, row_stats,
      temperature, action_mask, discrete_sizes);
}

} // namespace hee

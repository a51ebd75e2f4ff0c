// The Autograd kernel of hybrid_entropy_loss, in C++ so that backward works
// wherever the op runs: eager Python, TorchScript, and C++ programs that load
// a scripted module with no Python in the process. The forward re-enters the
// dispatcher below autograd and records one backward node; the node calls
// _hybrid_entropy_loss_backward through the dispatcher so that torch.compile /
// torch.export trace it.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <memory>
#include <tuple>
#include <type_traits>

#include "autograd_nodes.h"
#include "op_signatures.h"

namespace hee {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// A hyper-parameter as compiled autograd's CompiledNodeArgs collects it: a
// list as its std::optional<std::vector>, anything else as it is.
template <typename T>
const T& collected(const T& value) {
  return value;
}
template <typename T>
const std::optional<std::vector<T>>& collected(const OptionalList<T>& list) {
  return list.values;
}

// Saved inputs of either C++ type, unpacked as the backward op takes them.
template <typename T>
T unpacked_input(const SavedVariable& saved) {
  if constexpr (std::is_same_v<T, OptionalTensor>) {
    return defined_or_none(saved.unpack());
  } else {
    return saved.unpack();
  }
}

at::Tensor as_tensor(const OptionalTensor& t) {
  return t.value_or(at::Tensor());
}
const at::Tensor& as_tensor(const at::Tensor& t) {
  return t;
}

bool requires_grad(const OptionalTensor& t) {
  return t.has_value() && t->requires_grad();
}
bool requires_grad(const at::Tensor& t) {
  return t.defined() && t.requires_grad();
}

// The inputs of the forward (as tensors, undefined where absent) that get
// gradients, in order: the node's next edges.
auto differentiable_inputs(const LossForwardArgs& args) {
#define HEE_AS_TENSOR(type, name, ...) , std::make_tuple(as_tensor(args.name))
  return std::tuple_cat(std::tuple<>() HEE_DIFFERENTIABLE_INPUTS(HEE_AS_TENSOR));
#undef HEE_AS_TENSOR
}

// The backward node, written like PyTorch's generated ones (SumBackward0)
// rather than as a torch::autograd::Function: the Function's generic
// bookkeeping (input and output info per tensor, a hash map of saved data,
// wrapping each output through a lambda) is paid on every call, and measured
// it cost more than the whole small-size kernel (benchmarks/README.md, "The
// backward node"). Its saved values follow the op's argument lists
// (op_arguments.h).
struct HybridEntropyLossBackward final : public torch::autograd::Node {
  std::string name() const override {
    return "HybridEntropyLossBackward";
  }

  // Calls visit(saved_variable, is_output) on each saved value.
  template <typename Self, typename Visit>
  static void visit_saved(Self& self, const Visit& visit) {
#define HEE_VISIT_INPUT(type, name, ...) visit(self.name, false);
#define HEE_VISIT_TRAILING(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, visit(self.name, false);)
#define HEE_VISIT_OUTPUT(name, is_output) visit(self.name, is_output);
    HEE_DIFFERENTIABLE_INPUTS(HEE_VISIT_INPUT)
    HEE_TRAILING_ARGUMENTS(HEE_VISIT_TRAILING)
    HEE_SAVED_OUTPUTS(HEE_VISIT_OUTPUT)
#undef HEE_VISIT_INPUT
#undef HEE_VISIT_TRAILING
#undef HEE_VISIT_OUTPUT
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    visit_saved(*this, [](SavedVariable& v, bool) { v.reset_data(); });
  }

  // Compiled autograd (torch._dynamo.compiled_autograd) keys its cache on
  // what compiled_args collects and traces apply with its own saved values.
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args)
      const override {
    visit_saved(*this, [&](const SavedVariable& v, bool is_output) {
      args.collect(v, is_output);
    });
#define HEE_COLLECT_HYPERPARAMETER(kind, type, name, ...) \
  HEE_WHEN(kind, HYPERPARAMETER, args.collect(collected(hyperparameters.name));)
    HEE_TRAILING_ARGUMENTS(HEE_COLLECT_HYPERPARAMETER)
#undef HEE_COLLECT_HYPERPARAMETER
  }

  // Compiled autograd traces this node with placeholder upstream gradients
  // whose shape, dtype and device are made up
  // (torch/_dynamo/compiled_autograd.py, allocate_dummy) and binds the real
  // ones only when the graph runs. The backward op checks that upstream
  // gradients are 0-dim values of the outputs' dtype and device, so each
  // defined one enters the traced graph as such: its sum (the identity on a
  // 0-dim value) in the outputs' dtype, on their device.
  variable_list apply_with_saved(
      const variable_list& grads,
      torch::dynamo::autograd::SwapSavedVariables& saved) override {
    visit_saved(*this, [&](SavedVariable& v, bool) { saved.before(v); });
    const at::TensorOptions output_options =
        discrete_entropy.unpack(getptr()).options();
    variable_list traced_grads(grads.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].defined()) {
        traced_grads[i] = grads[i].sum().to(output_options);
      }
    }
    auto result = apply(std::move(traced_grads));
    visit_saved(*this, [&](SavedVariable& v, bool) { saved.after(v); });
    return result;
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    // Next edges: the differentiable inputs in order; a missing head's edge
    // is invalid and never computed.
    std::array<bool, kNumDifferentiableInputs> output_mask{};
    for (int i = 0; i < kNumDifferentiableInputs; ++i) {
      output_mask[i] = task_should_compute_output(i);
    }
    const bool any_grad = std::any_of(
        grads.begin(), grads.end(),
        [](const at::Tensor& g) { return g.defined(); });
    variable_list input_grads(kNumDifferentiableInputs);
    if (!any_grad) {
      return input_grads;
    }
    const auto self = getptr();
    // With no graph to record (create_graph=False), skip the backward op's
    // autograd fallback: a boxed call that walks every argument; measured,
    // it cost about as much as the small-size kernel itself
    // (benchmarks/README.md, "The backward node"). With create_graph=True
    // the fallback stays in the path so that a second derivative raises.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) {
      below_autograd.emplace();
    }
    std::array<OptionalTensor, kNumLossOutputs> upstream;
    for (int i = 0; i < kNumLossOutputs; ++i) {
      upstream[i] = defined_or_none(grads[i]);
    }
#define HEE_UNPACK_INPUT(type, name, ...) \
  const type name##_value = unpacked_input<type>(name);
#define HEE_UNPACK_OUTPUT(name, is_output) \
  const at::Tensor name##_value = is_output ? name.unpack(self) : name.unpack();
#define HEE_UNPACK_TRAILING(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, HEE_UNPACK_INPUT(type, name))
    HEE_DIFFERENTIABLE_INPUTS(HEE_UNPACK_INPUT)
    HEE_TRAILING_ARGUMENTS(HEE_UNPACK_TRAILING)
    HEE_SAVED_OUTPUTS(HEE_UNPACK_OUTPUT)
#undef HEE_UNPACK_INPUT
#undef HEE_UNPACK_TRAILING
#undef HEE_UNPACK_OUTPUT
#define HEE_INPUT_VALUE(type, name, ...) name##_value,
#define HEE_OUTPUT_VALUE(name, is_output) name##_value,
    LossBackwardOutputs computed = call_backward_op(LossBackwardArgs{
        upstream,
        HEE_DIFFERENTIABLE_INPUTS(HEE_INPUT_VALUE)
        HEE_SAVED_OUTPUTS(HEE_OUTPUT_VALUE)
#define HEE_TRAILING_VALUE(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, name##_value, )
        hyperparameters,
        output_mask,
        HEE_TRAILING_ARGUMENTS(HEE_TRAILING_VALUE)});
#undef HEE_TRAILING_VALUE
#undef HEE_INPUT_VALUE
#undef HEE_OUTPUT_VALUE
    auto computed_grads = std::apply(
        [](auto&... g) {
          return std::array<at::Tensor, kNumDifferentiableInputs>{
              std::move(g)...};
        },
        computed);
    for (int i = 0; i < kNumDifferentiableInputs; ++i) {
      if (output_mask[i]) {
        input_grads[i] = std::move(computed_grads[i]);
      }
    }
    return input_grads;
  }

  // Only O(B) statistics and the inputs themselves are kept: never a [B, K]
  // softmax.
#define HEE_SAVED_INPUT_FIELD(type, name, ...) SavedVariable name;
#define HEE_SAVED_OUTPUT_FIELD(name, is_output) SavedVariable name;
#define HEE_SAVED_TRAILING_FIELD(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, SavedVariable name;)
  HEE_DIFFERENTIABLE_INPUTS(HEE_SAVED_INPUT_FIELD)
  HEE_TRAILING_ARGUMENTS(HEE_SAVED_TRAILING_FIELD)
  HEE_SAVED_OUTPUTS(HEE_SAVED_OUTPUT_FIELD)
#undef HEE_SAVED_INPUT_FIELD
#undef HEE_SAVED_TRAILING_FIELD
#undef HEE_SAVED_OUTPUT_FIELD
  LossHyperparameters hyperparameters{};
};

LossForwardOutputs hybrid_entropy_loss_autograd(const LossForwardArgs& args) {
  const auto inputs = differentiable_inputs(args);
  // Without this check a dual input would give outputs with no tangent, a
  // silently wrong directional derivative.
  TORCH_CHECK_NOT_IMPLEMENTED(
      !std::apply(
          [](const auto&... t) {
            return (torch::autograd::isFwGradDefined(t) || ...);
          },
          inputs),
      "hybrid_entropy_loss has no forward-mode derivative (torch.autograd."
      "forward_ad, torch.func.jvp); use reverse mode");
  // A tensor that receives no gradient must not look as if it did.
#define HEE_CHECK_NO_GRAD(kind, type, name, ...)                              \
  HEE_WHEN(                                                                 \
      kind, INPUT,                                                          \
      TORCH_CHECK_NOT_IMPLEMENTED(                                          \
          !requires_grad(args.name),                                        \
          "hybrid_entropy_loss: " #name " receives no gradient; pass it "  \
          "detached (" #name ".detach())");)
  HEE_TRAILING_ARGUMENTS(HEE_CHECK_NO_GRAD)
#undef HEE_CHECK_NO_GRAD
  LossForwardOutputs outputs;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    outputs = call_forward_op(args);
  }
  if (!std::apply(
          [](const auto&... t) {
            return torch::autograd::compute_requires_grad(t...);
          },
          inputs)) {
    return outputs;
  }
  auto grad_fn = make_node<HybridEntropyLossBackward>();
  grad_fn->set_next_edges(std::apply(
      [](const auto&... t) { return torch::autograd::collect_next_edges(t...); },
      inputs));
  // The loss components are differentiable, in order; the other outputs
  // are not and get no history.
#define HEE_COMPONENT(name) std::get<k_##name>(outputs),
  torch::autograd::set_history({HEE_LOSS_COMPONENTS(HEE_COMPONENT)}, grad_fn);
#undef HEE_COMPONENT
#define HEE_SAVE_INPUT(type, name, ...) \
  grad_fn->name = SavedVariable(as_tensor(args.name), /*is_output=*/false);
#define HEE_SAVE_OUTPUT(name, is_output) \
  grad_fn->name = SavedVariable(std::get<k_##name>(outputs), is_output);
#define HEE_SAVE_TRAILING(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, HEE_SAVE_INPUT(type, name))
  HEE_DIFFERENTIABLE_INPUTS(HEE_SAVE_INPUT)
  HEE_TRAILING_ARGUMENTS(HEE_SAVE_TRAILING)
  HEE_SAVED_OUTPUTS(HEE_SAVE_OUTPUT)
#undef HEE_SAVE_TRAILING
#undef HEE_SAVE_INPUT
#undef HEE_SAVE_OUTPUT
  grad_fn->hyperparameters = args.hyperparameters;
  return outputs;
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Autograd, m) {
  m.impl("hybrid_entropy_loss", forward_kernel<&hybrid_entropy_loss_autograd>);
  // The backward is differentiable once: differentiating it again
  // (create_graph=True) raises "not implemented" instead of silently
  // returning no second derivative.
  m.impl(
      "_hybrid_entropy_loss_backward",
      torch::autograd::autogradNotImplementedFallback());
}

} // namespace hee

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

#include <memory>
#include <type_traits>

#include "op_signatures.h"

namespace hee {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// A new autograd node held as torch holds its nodes: by c10::intrusive_ptr
// where Node is an intrusive_ptr_target (torch 2.13 on), by std::shared_ptr
// before. Decided from the type, not the version number, so any torch whose
// Node is either builds.
template <typename NodeType>
auto make_node() {
  if constexpr (std::is_base_of_v<c10::intrusive_ptr_target, NodeType>) {
    return c10::make_intrusive<NodeType>();
  } else {
    return std::make_shared<NodeType>();
  }
}

OptionalTensor defined_or_none(const at::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : std::nullopt;
}

// The backward node, written like PyTorch's generated ones (SumBackward0)
// rather than as a torch::autograd::Function: the Function's generic
// bookkeeping (input and output info per tensor, a hash map of saved data,
// wrapping each output through a lambda) is paid on every call, and measured
// it cost more than the whole small-size kernel (benchmarks/README.md, "The
// backward node").
struct HybridEntropyLossBackward final : public torch::autograd::Node {
  std::string name() const override {
    return "HybridEntropyLossBackward";
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    logits.reset_data();
    log_std.reset_data();
    entropy_coeff.reset_data();
    row_stats.reset_data();
    discrete_entropy.reset_data();
    continuous_entropy.reset_data();
  }

  // Compiled autograd (torch._dynamo.compiled_autograd) keys its cache on
  // what compiled_args collects and traces apply with its own saved values.
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args)
      const override {
    args.collect(logits, false);
    args.collect(log_std, false);
    args.collect(entropy_coeff, false);
    args.collect(row_stats, false);
    args.collect(discrete_entropy, true);
    args.collect(continuous_entropy, true);
    args.collect(params.discrete_weight);
    args.collect(params.continuous_weight);
    args.collect(params.has_discrete_threshold);
    args.collect(params.discrete_threshold);
    args.collect(params.has_continuous_threshold);
    args.collect(params.continuous_threshold);
    args.collect(params.penalty_multiplier);
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
    saved.before(logits);
    saved.before(log_std);
    saved.before(entropy_coeff);
    saved.before(row_stats);
    saved.before(discrete_entropy);
    saved.before(continuous_entropy);
    const at::TensorOptions output_options =
        discrete_entropy.unpack(getptr()).options();
    variable_list traced_grads(grads.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].defined()) {
        traced_grads[i] = grads[i].sum().to(output_options);
      }
    }
    auto result = apply(std::move(traced_grads));
    saved.after(logits);
    saved.after(log_std);
    saved.after(entropy_coeff);
    saved.after(row_stats);
    saved.after(discrete_entropy);
    saved.after(continuous_entropy);
    return result;
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    // Next edges: 0 logits, 1 log_std, 2 entropy_coeff; a missing head's
    // edge is invalid and never computed.
    const std::array<bool, 3> output_mask = {
        task_should_compute_output(0), task_should_compute_output(1),
        task_should_compute_output(2)};
    const bool any_grad = std::any_of(
        grads.begin(), grads.end(),
        [](const at::Tensor& g) { return g.defined(); });
    variable_list input_grads(3);
    if (!any_grad) {
      return input_grads;
    }
    const auto self = getptr();
    // With no graph to record (create_graph=False), skip the backward op's
    // autograd fallback: a boxed call that walks all nineteen arguments;
    // measured, it cost about as much as the small-size kernel itself
    // (benchmarks/README.md, "The backward node"). With create_graph=True the
    // fallback stays in the path so that a second derivative raises.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) {
      below_autograd.emplace();
    }
    const OptionalTensor logits_or_none = defined_or_none(logits.unpack());
    const OptionalTensor log_std_or_none = defined_or_none(log_std.unpack());
    const at::Tensor entropy_coeff_value = entropy_coeff.unpack();
    const at::Tensor row_stats_value = row_stats.unpack();
    const at::Tensor discrete_entropy_value = discrete_entropy.unpack(self);
    const at::Tensor continuous_entropy_value = continuous_entropy.unpack(self);
    auto [grad_logits, grad_log_std, grad_entropy_coeff] =
        call_backward_op(LossBackwardArgs{
            {defined_or_none(grads[0]), defined_or_none(grads[1]),
             defined_or_none(grads[2]), defined_or_none(grads[3]),
             defined_or_none(grads[4]), defined_or_none(grads[5]),
             defined_or_none(grads[6])},
            logits_or_none,
            log_std_or_none,
            entropy_coeff_value,
            row_stats_value,
            discrete_entropy_value,
            continuous_entropy_value,
            params,
            output_mask});
    if (output_mask[0]) {
      input_grads[0] = std::move(grad_logits);
    }
    if (output_mask[1]) {
      input_grads[1] = std::move(grad_log_std);
    }
    if (output_mask[2]) {
      input_grads[2] = std::move(grad_entropy_coeff);
    }
    return input_grads;
  }

  // Only O(B) statistics and the inputs themselves are kept: never a [B, K]
  // softmax.
  SavedVariable logits;
  SavedVariable log_std;
  SavedVariable entropy_coeff;
  SavedVariable row_stats;
  SavedVariable discrete_entropy;
  SavedVariable continuous_entropy;
  math::LossParams params{};
};

LossForwardOutputs hybrid_entropy_loss_autograd(const LossForwardArgs& args) {
  // Without this check a dual input would give outputs with no tangent, a
  // silently wrong directional derivative.
  TORCH_CHECK_NOT_IMPLEMENTED(
      !(torch::autograd::isFwGradDefined(args.logits) ||
        torch::autograd::isFwGradDefined(args.log_std) ||
        torch::autograd::isFwGradDefined(args.entropy_coeff)),
      "hybrid_entropy_loss has no forward-mode derivative (torch.autograd."
      "forward_ad, torch.func.jvp); use reverse mode");
  const at::Tensor logits_or_undefined = args.logits.value_or(at::Tensor());
  const at::Tensor log_std_or_undefined = args.log_std.value_or(at::Tensor());
  LossForwardOutputs outputs;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    outputs = call_forward_op(args);
  }
  if (!torch::autograd::compute_requires_grad(
          logits_or_undefined, log_std_or_undefined, args.entropy_coeff)) {
    return outputs;
  }
  auto& [total, discrete, continuous, discrete_penalty, continuous_penalty,
         discrete_entropy, continuous_entropy, row_stats] = outputs;
  auto grad_fn = make_node<HybridEntropyLossBackward>();
  grad_fn->set_next_edges(torch::autograd::collect_next_edges(
      logits_or_undefined, log_std_or_undefined, args.entropy_coeff));
  // The seven loss components are differentiable, in this order; row_stats
  // is not and gets no history.
  torch::autograd::set_history(
      {total, discrete, continuous, discrete_penalty, continuous_penalty,
       discrete_entropy, continuous_entropy},
      grad_fn);
  grad_fn->logits = SavedVariable(logits_or_undefined, /*is_output=*/false);
  grad_fn->log_std = SavedVariable(log_std_or_undefined, /*is_output=*/false);
  grad_fn->entropy_coeff =
      SavedVariable(args.entropy_coeff, /*is_output=*/false);
  grad_fn->row_stats = SavedVariable(row_stats, /*is_output=*/false);
  // Saved as outputs of this node: a saved output that kept its grad_fn
  // (this node) would be a reference cycle.
  grad_fn->discrete_entropy = SavedVariable(discrete_entropy, /*is_output=*/true);
  grad_fn->continuous_entropy =
      SavedVariable(continuous_entropy, /*is_output=*/true);
  grad_fn->params = args.params;
  return outputs;
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Autograd, m) {
  m.impl("hybrid_entropy_loss", &forward_kernel<&hybrid_entropy_loss_autograd>);
  // The backward is differentiable once: differentiating it again
  // (create_graph=True) raises "not implemented" instead of silently
  // returning no second derivative.
  m.impl(
      "_hybrid_entropy_loss_backward",
      torch::autograd::autogradNotImplementedFallback());
}

} // namespace hee

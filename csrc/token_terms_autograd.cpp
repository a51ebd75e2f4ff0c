// The Autograd kernel of log_prob_and_entropy, in C++ for the reasons of
// autograd.cpp (backward in eager Python, TorchScript and C++ programs alike).
// The forward re-enters the dispatcher below autograd and records one node;
// the node calls _log_prob_and_entropy_backward through the dispatcher, so
// torch.compile and torch.export trace it.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <mutex>
#include <optional>

#include "autograd_nodes.h"
#include "op_signatures.h"
#include "token_terms_op.h"

namespace hee {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Keeps the inputs and the forward's O(N) row statistics: never a [N, K]
// softmax.
struct LogProbAndEntropyBackward final : public torch::autograd::Node {
  std::string name() const override {
    return "LogProbAndEntropyBackward";
  }

  // Calls visit(saved_variable) on each saved value.
  template <typename Self, typename Visit>
  static void visit_saved(Self& self, const Visit& visit) {
    for (auto* saved : {&self.logits, &self.actions, &self.mask,
                        &self.action_mask, &self.row_stats}) {
      visit(*saved);
    }
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    visit_saved(*this, [](SavedVariable& v) { v.reset_data(); });
  }

  // grads: those of log_prob and entropy, in output order.
  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    variable_list input_grads(1);
    const OptionalTensor grad_log_prob =
        has_actions ? defined_or_none(grads[0]) : std::nullopt;
    const OptionalTensor grad_entropy = defined_or_none(grads[1]);
    if (!task_should_compute_output(0) ||
        !(grad_log_prob.has_value() || grad_entropy.has_value())) {
      return input_grads;
    }
    // As in autograd.cpp: with no graph to record, skip the backward op's
    // autograd fallback; with create_graph=True it stays, so that a second
    // derivative raises.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) {
      below_autograd.emplace();
    }
    input_grads[0] = call_token_terms_backward(
        grad_log_prob, grad_entropy, logits.unpack(),
        defined_or_none(actions.unpack()), defined_or_none(mask.unpack()),
        row_stats.unpack(), temperature,
        defined_or_none(action_mask.unpack()), discrete_sizes);
    return input_grads;
  }

  SavedVariable logits;
  SavedVariable actions;
  SavedVariable mask;
  SavedVariable action_mask;
  SavedVariable row_stats;
  double temperature = 1.0;
  bool has_actions = false;
  // By value: the dispatcher passed a view of the caller's list.
  OptionalList<int64_t> discrete_sizes;
};

TokenTermsOutputs log_prob_and_entropy_autograd(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      !torch::autograd::isFwGradDefined(logits),
      "log_prob_and_entropy has no forward-mode derivative (torch.autograd."
      "forward_ad, torch.func.jvp); use reverse mode");
  TokenTermsOutputs outputs;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    outputs = call_token_terms_forward(
        logits, actions, mask, temperature, action_mask, discrete_sizes);
  }
  if (!torch::autograd::compute_requires_grad(logits)) {
    return outputs;
  }
  auto grad_fn = make_node<LogProbAndEntropyBackward>();
  grad_fn->set_next_edges(torch::autograd::collect_next_edges(logits));
  torch::autograd::set_history(
      {std::get<0>(outputs), std::get<1>(outputs)}, grad_fn);
  grad_fn->logits = SavedVariable(logits, /*is_output=*/false);
  grad_fn->actions = SavedVariable(actions.value_or(at::Tensor()), false);
  grad_fn->mask = SavedVariable(mask.value_or(at::Tensor()), false);
  grad_fn->action_mask =
      SavedVariable(action_mask.value_or(at::Tensor()), false);
  grad_fn->row_stats = SavedVariable(std::get<2>(outputs), false);
  grad_fn->temperature = temperature;
  grad_fn->has_actions = actions.has_value();
  grad_fn->discrete_sizes = OptionalList<int64_t>(discrete_sizes);
  return outputs;
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Autograd, m) {
  m.impl("log_prob_and_entropy", &log_prob_and_entropy_autograd);
  // Differentiable once, as _hybrid_entropy_loss_backward (autograd.cpp).
  m.impl(
      "_log_prob_and_entropy_backward",
      torch::autograd::autogradNotImplementedFallback());
}

} // namespace hee

// The Autograd kernel of hybrid_entropy_loss, in C++ so that backward works
// wherever the op runs: eager Python, TorchScript, and C++ programs that load
// a scripted module with no Python in the process. The forward re-enters the
// dispatcher below autograd; the backward calls hybrid_entropy_loss_backward
// through the dispatcher so that torch.compile / torch.export trace it.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "ops.h"

namespace hee {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

LossForwardOutputs call_forward_op(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("hybrid_entropy_ext::hybrid_entropy_loss", "")
          .typed<LossForwardOutputs(
              const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const at::Tensor&, double,
              double, std::optional<double>, std::optional<double>, double)>();
  return op.call(
      logits, log_std, entropy_coeff, discrete_entropy_weight,
      continuous_entropy_weight, min_entropy_threshold,
      continuous_min_entropy_threshold, penalty_multiplier);
}

LossBackwardOutputs call_backward_op(
    const variable_list& grads,
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    const at::Tensor& row_stats,
    const at::Tensor& discrete_entropy,
    const at::Tensor& continuous_entropy,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier,
    std::array<bool, 3> output_mask) {
  using OptTensor = const std::optional<at::Tensor>&;
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(
              "hybrid_entropy_ext::hybrid_entropy_loss_backward", "")
          .typed<LossBackwardOutputs(
              OptTensor, OptTensor, OptTensor, OptTensor, OptTensor, OptTensor,
              OptTensor, OptTensor, OptTensor, const at::Tensor&,
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              double, double, std::optional<double>,
              std::optional<double>, double, std::array<bool, 3>)>();
  return op.call(
      defined_or_none(grads[0]), defined_or_none(grads[1]),
      defined_or_none(grads[2]), defined_or_none(grads[3]),
      defined_or_none(grads[4]), defined_or_none(grads[5]),
      defined_or_none(grads[6]), logits, log_std, entropy_coeff, row_stats,
      discrete_entropy, continuous_entropy,
      discrete_entropy_weight, continuous_entropy_weight,
      min_entropy_threshold, continuous_min_entropy_threshold,
      penalty_multiplier, output_mask);
}

class HybridEntropyLossFunction
    : public torch::autograd::Function<HybridEntropyLossFunction> {
 public:
  static variable_list forward(
      AutogradContext* ctx,
      const std::optional<at::Tensor>& logits,
      const std::optional<at::Tensor>& log_std,
      const at::Tensor& entropy_coeff,
      double discrete_entropy_weight,
      double continuous_entropy_weight,
      std::optional<double> min_entropy_threshold,
      std::optional<double> continuous_min_entropy_threshold,
      double penalty_multiplier) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [total, discrete, continuous, discrete_penalty, continuous_penalty,
          discrete_entropy, continuous_entropy, row_stats] =
        call_forward_op(
            logits, log_std, entropy_coeff, discrete_entropy_weight,
            continuous_entropy_weight, min_entropy_threshold,
            continuous_min_entropy_threshold, penalty_multiplier);

    // Only O(B) statistics and the inputs themselves are kept: never a
    // [B, K] softmax.
    ctx->save_for_backward(
        {logits.value_or(at::Tensor()), log_std.value_or(at::Tensor()),
         entropy_coeff, row_stats, discrete_entropy, continuous_entropy});
    // One entry for all hyper-parameters: each saved_data key costs a hash
    // map insertion per call.
    ctx->saved_data["params"] = c10::ivalue::Tuple::create(
        {discrete_entropy_weight, continuous_entropy_weight,
         min_entropy_threshold, continuous_min_entropy_threshold,
         penalty_multiplier});
    ctx->mark_non_differentiable({row_stats});
    // Unused outputs arrive as undefined gradients and the kernel treats
    // them as 0, instead of seven zero-filled scalars per backward.
    ctx->set_materialize_grads(false);
    return {total,           discrete,         continuous,
            discrete_penalty, continuous_penalty, discrete_entropy,
            continuous_entropy, row_stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    // needs_input_grad counts tensor inputs only: a None head has no slot.
    const bool has_logits = saved[0].defined();
    const bool has_log_std = saved[1].defined();
    const int coeff_slot = int(has_logits) + int(has_log_std);
    const std::array<bool, 3> output_mask = {
        has_logits && ctx->needs_input_grad(0),
        has_log_std && ctx->needs_input_grad(has_logits ? 1 : 0),
        ctx->needs_input_grad(coeff_slot)};
    const bool any_grad = std::any_of(
        grads.begin(), grads.begin() + kNumLossOutputs,
        [](const at::Tensor& g) { return g.defined(); });
    variable_list input_grads(8);
    if (!any_grad) {
      return input_grads;
    }
    const auto params = ctx->saved_data["params"].toTuple();
    const auto& p = params->elements();
    // With no graph to record (create_graph=False), skip the backward op's
    // autograd fallback: a boxed call that walks all nineteen arguments and
    // costs as much as the small-size kernel itself. With create_graph=True
    // the fallback stays in the path so that a second derivative raises.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) {
      below_autograd.emplace();
    }
    auto [grad_logits, grad_log_std, grad_entropy_coeff] = call_backward_op(
        grads, defined_or_none(saved[0]), defined_or_none(saved[1]), saved[2],
        saved[3], saved[4], saved[5], p[0].toDouble(),
        p[1].toDouble(), p[2].toOptional<double>(), p[3].toOptional<double>(),
        p[4].toDouble(), output_mask);
    if (output_mask[0]) {
      input_grads[0] = grad_logits;
    }
    if (output_mask[1]) {
      input_grads[1] = grad_log_std;
    }
    if (output_mask[2]) {
      input_grads[2] = grad_entropy_coeff;
    }
    return input_grads;
  }
};

LossForwardOutputs hybrid_entropy_loss_autograd(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  // Without a graph to record, skip the autograd Function's bookkeeping (a
  // third of a small call's time).
  const auto requires_grad = [](const std::optional<at::Tensor>& t) {
    return t.has_value() && t->requires_grad();
  };
  if (!at::GradMode::is_enabled() ||
      !(requires_grad(logits) || requires_grad(log_std) ||
        entropy_coeff.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_forward_op(
        logits, log_std, entropy_coeff, discrete_entropy_weight,
        continuous_entropy_weight, min_entropy_threshold,
        continuous_min_entropy_threshold, penalty_multiplier);
  }
  const auto outputs = HybridEntropyLossFunction::apply(
      logits, log_std, entropy_coeff, discrete_entropy_weight,
      continuous_entropy_weight, min_entropy_threshold,
      continuous_min_entropy_threshold, penalty_multiplier);
  return {outputs[0], outputs[1], outputs[2], outputs[3], outputs[4],
          outputs[5], outputs[6], outputs[7]};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, Autograd, m) {
  m.impl("hybrid_entropy_loss", &hybrid_entropy_loss_autograd);
  // The backward is differentiable once: differentiating it again
  // (create_graph=True) raises "not implemented" instead of silently
  // returning no second derivative.
  m.impl(
      "hybrid_entropy_loss_backward",
      torch::autograd::autogradNotImplementedFallback());
}

} // namespace hee

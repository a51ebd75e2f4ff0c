// The C++ signatures of hybrid_entropy_ext's two ops, written once.
//
// Every kernel (Meta, CPU, CUDA, Autograd) takes its op's arguments as one
// struct, LossForwardArgs or LossBackwardArgs. The dispatcher needs the
// unboxed signature that matches the schema in ops.cpp: forward_kernel /
// backward_kernel spell it, once, and adapt a struct-taking kernel to it; the
// type aliases LossForwardSignature / LossBackwardSignature are theirs.
// call_forward_op / call_backward_op go the other way, through the
// dispatcher.
#pragma once

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>

#include <ATen/core/Tensor.h>

#include "entropy_math.h"

namespace hee {

using OptionalTensor = std::optional<at::Tensor>;

// total, discrete, continuous, discrete_penalty, continuous_penalty,
// discrete_entropy, continuous_entropy (0-dim each), then the per-row
// statistics kept for the backward, row_stats [3, B] (docs/design.md, "The
// row statistics").
constexpr int kNumLossOutputs = 7;
using LossForwardOutputs = std::tuple<
    at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
    at::Tensor, at::Tensor>;

// grad_logits, grad_log_std, grad_entropy_coeff; an input whose gradient was
// not requested (output_mask) gets an empty [0] placeholder.
using LossBackwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The forward op's arguments. The references live as long as the call.
struct LossForwardArgs {
  const OptionalTensor& logits;
  const OptionalTensor& log_std;
  const at::Tensor& entropy_coeff;
  math::LossParams params;

  // The head that sets the device: logits when present, else log_std (the
  // checks reject a call with neither).
  const at::Tensor& head() const {
    return logits.has_value() ? *logits : *log_std;
  }
};

// The backward op's arguments: the upstream gradients of the seven outputs
// (None where an output was not used), the forward's inputs, what the
// forward saved, and which input gradients to compute.
struct LossBackwardArgs {
  std::array<OptionalTensor, kNumLossOutputs> grads;
  const OptionalTensor& logits;
  const OptionalTensor& log_std;
  const at::Tensor& entropy_coeff;
  const at::Tensor& row_stats;
  const at::Tensor& discrete_entropy;
  const at::Tensor& continuous_entropy;
  math::LossParams params;
  std::array<bool, 3> output_mask;

  const at::Tensor& head() const {
    return logits.has_value() ? *logits : *log_std;
  }
};

inline math::LossParams make_loss_params(
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  math::LossParams params;
  params.discrete_weight = discrete_entropy_weight;
  params.continuous_weight = continuous_entropy_weight;
  params.has_discrete_threshold = min_entropy_threshold.has_value();
  params.discrete_threshold = min_entropy_threshold.value_or(0.0);
  params.has_continuous_threshold =
      continuous_min_entropy_threshold.has_value();
  params.continuous_threshold = continuous_min_entropy_threshold.value_or(0.0);
  params.penalty_multiplier = penalty_multiplier;
  return params;
}

inline std::optional<double> discrete_threshold_of(const math::LossParams& p) {
  return p.has_discrete_threshold ? std::optional<double>(p.discrete_threshold)
                                  : std::nullopt;
}

inline std::optional<double> continuous_threshold_of(
    const math::LossParams& p) {
  return p.has_continuous_threshold
      ? std::optional<double>(p.continuous_threshold)
      : std::nullopt;
}

using ForwardKernel = LossForwardOutputs (*)(const LossForwardArgs&);
using BackwardKernel = LossBackwardOutputs (*)(const LossBackwardArgs&);

// The dispatcher-facing kernel of a struct-taking forward kernel:
//   m.impl("hybrid_entropy_loss", &forward_kernel<&my_forward>);
template <ForwardKernel Kernel>
LossForwardOutputs forward_kernel(
    const OptionalTensor& logits,
    const OptionalTensor& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  return Kernel(LossForwardArgs{
      logits, log_std, entropy_coeff,
      make_loss_params(
          discrete_entropy_weight, continuous_entropy_weight,
          min_entropy_threshold, continuous_min_entropy_threshold,
          penalty_multiplier)});
}

template <BackwardKernel Kernel>
LossBackwardOutputs backward_kernel(
    const OptionalTensor& grad_total,
    const OptionalTensor& grad_discrete,
    const OptionalTensor& grad_continuous,
    const OptionalTensor& grad_discrete_penalty,
    const OptionalTensor& grad_continuous_penalty,
    const OptionalTensor& grad_discrete_entropy,
    const OptionalTensor& grad_continuous_entropy,
    const OptionalTensor& logits,
    const OptionalTensor& log_std,
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
  return Kernel(LossBackwardArgs{
      {grad_total, grad_discrete, grad_continuous, grad_discrete_penalty,
       grad_continuous_penalty, grad_discrete_entropy,
       grad_continuous_entropy},
      logits,
      log_std,
      entropy_coeff,
      row_stats,
      discrete_entropy,
      continuous_entropy,
      make_loss_params(
          discrete_entropy_weight, continuous_entropy_weight,
          min_entropy_threshold, continuous_min_entropy_threshold,
          penalty_multiplier),
      output_mask});
}

// The unboxed signatures of the schema in ops.cpp: the adapters' own (taking
// their type does not instantiate them).
using LossForwardSignature =
    std::remove_pointer_t<decltype(&forward_kernel<nullptr>)>;
using LossBackwardSignature =
    std::remove_pointer_t<decltype(&backward_kernel<nullptr>)>;

// Calls through the dispatcher (from the current dispatch key down).
LossForwardOutputs call_forward_op(const LossForwardArgs& args);
LossBackwardOutputs call_backward_op(const LossBackwardArgs& args);

} // namespace hee

// log_prob_and_entropy and its backward: the unboxed signatures every kernel
// registers (CPU, CUDA, Meta, Autograd) and the calls through the dispatcher.
// The schemas are in ops.cpp; docs/design.md, "Per-token terms", has the
// semantics.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace hee {

using OptionalTensor = std::optional<at::Tensor>;

// (log_prob [...] or [0] without actions, entropy [...], row_stats [3, N]).
using TokenTermsOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

using TokenTermsForwardSignature = TokenTermsOutputs(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature);

// Returns grad_logits (logits' shape, contiguous, logits' dtype).
using TokenTermsBackwardSignature = at::Tensor(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature);

TokenTermsOutputs call_token_terms_forward(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature);

at::Tensor call_token_terms_backward(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature);

} // namespace hee

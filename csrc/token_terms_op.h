// log_prob_and_entropy and its backward: the unboxed signatures every kernel
// registers (CPU, CUDA, Meta, Autograd) and the calls through the dispatcher.
// The schemas are in ops.cpp; docs/design.md, "Per-token terms", has the
// semantics.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/util/OptionalArrayRef.h>

namespace hee {

using OptionalTensor = std::optional<at::Tensor>;

// The schemas (without the namespace): ops.cpp defines them, and the CUDA
// emulation of the tests registers its ops under the same ones.
constexpr const char* kTokenTermsForwardSchema =
    "log_prob_and_entropy(Tensor logits, Tensor? actions=None, "
    "Tensor? mask=None, float temperature=1.0, Tensor? action_mask=None, "
    "int[]? discrete_sizes=None) -> "
    "(Tensor log_prob, Tensor entropy, Tensor row_stats)";
constexpr const char* kTokenTermsBackwardSchema =
    "_log_prob_and_entropy_backward(Tensor? grad_log_prob, "
    "Tensor? grad_entropy, Tensor logits, Tensor? actions, Tensor? mask, "
    "Tensor row_stats, float temperature, Tensor? action_mask=None, "
    "int[]? discrete_sizes=None) -> Tensor";

// (log_prob [...] or [0] without actions, entropy [...], row_stats
// [3, H * N]: H sub-heads, the length of discrete_sizes, else 1).
using TokenTermsOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

using TokenTermsForwardSignature = TokenTermsOutputs(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

// Returns grad_logits (logits' shape, contiguous, logits' dtype).
using TokenTermsBackwardSignature = at::Tensor(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

TokenTermsOutputs call_token_terms_forward(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

at::Tensor call_token_terms_backward(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

} // namespace hee

// The device-independent part of log_prob_and_entropy's kernels, written
// once (as loss_plan.h is for hybrid_entropy_loss): the argument checks, every
// output's shape and dtype, and the layout in which the data kernels read the
// rows (docs/design.md, "Per-token terms").
#pragma once

#include <ATen/core/Tensor.h>

#include "loss_plan.h"

namespace hee {

// The rows are the logits' leading dims flattened: logits [..., K] is
// [N, K], and mask and both outputs are [...] (N values); actions are [...],
// or [..., H] with discrete_sizes (one per sub-head, docs/design.md,
// "Sub-heads").
struct TokenTermsForwardPlan {
  bool has_actions = false;
  bool has_mask = false;
  bool has_action_mask = false;
  int64_t num_heads = 1;  // H: the length of discrete_sizes, else 1
  TensorSpec log_prob;   // [...] in the accumulation dtype; [0] without actions
  TensorSpec entropy;    // [...] in the accumulation dtype
  TensorSpec row_stats;  // [3, H * N], the accumulation dtype (loss_plan's
                         // layout: sub-head h's row i at h * N + i)
  // [H, N] in the accumulation dtype: each sub-head's terms before their sum,
  // for backends that compute the heads one after another over all rows
  // (CUDA); [0, N] for one head, which writes the outputs directly.
  TensorSpec head_terms;
};

// Checks the forward's arguments (metadata only, SymInt sizes) and plans it.
TokenTermsForwardPlan plan_token_terms_forward(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

// Checks the backward's arguments (those of the forward, row_stats and the
// upstream gradients, each [...] when given) and returns grad_logits' spec:
// logits' shape, contiguous, logits' dtype.
TensorSpec plan_token_terms_backward(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

// The inputs as the data kernels read them: logits as [N, K] rows with unit
// column stride (a view where the leading dims allow one), actions as
// contiguous int64 [N, H] (row i's action of sub-head h at i * H + h: the
// kernels read one sub-head's with a stride, no transposed copy), mask as [N]
// contiguous bool, action_mask as [N, K] bool rows with unit column stride
// and any row stride (0 for one mask broadcast to every row), each undefined
// when absent, the scale of the tempered logits z = x * scale, and the
// sub-heads' columns (one head of every column without discrete_sizes).
struct TokenRows {
  at::Tensor logits;
  at::Tensor actions;
  at::Tensor mask;
  at::Tensor action_mask;
  double scale = 1.0;
  std::vector<DiscreteSubHead> heads;
  bool has_sub_heads = false;  // discrete_sizes given (actions [..., H])

  // H: the row stride of the actions.
  int64_t num_action_columns() const {
    return static_cast<int64_t>(heads.size());
  }

  int64_t num_rows() const {
    return logits.size(0);
  }
  int64_t num_cols() const {
    return logits.size(1);
  }
};
TokenRows token_rows_for_kernels(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes);

// An upstream gradient as the kernels read it: [N] contiguous in `dtype`,
// each value times `scale` (the tempered logits' derivative); zeros when
// absent.
at::Tensor per_row_grad(
    const OptionalTensor& grad, int64_t num_rows, double scale,
    at::ScalarType dtype, c10::Device device);

} // namespace hee

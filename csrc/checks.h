// Argument checks of both ops, shared by every backend and the Meta kernels
// (loss_plan.cpp calls them). Only metadata is read (no device sync), and
// sizes are compared as SymInts so that dynamic shapes under torch.compile /
// torch.export keep working. A bad argument is a ValueError (TypeError for a
// wrong dtype) that names it, says what was expected and what was given.
#pragma once

#include "op_signatures.h"

namespace hee {

// TypeError unless t is float32, float64, bfloat16 or float16.
void check_floating(const at::Tensor& t, const char* op, const char* name);

// Whether two shapes are equal, as SymInts: under tracing, a guard that they
// are.
bool same_sizes(c10::SymIntArrayRef a, c10::SymIntArrayRef b);

// action_mask, where given: bool, the logits' shape, on their device. Both
// ops read it as -inf logits where it is False.
void check_action_mask(
    const OptionalTensor& action_mask,
    const at::Tensor& logits,
    const char* op);

// discrete_sizes (sub-heads' sizes, docs/design.md, "Sub-heads"): at least
// one, each > 0, summing to num_columns (the logits' K) without overflow.
void check_discrete_sizes_sum_to(
    at::IntArrayRef sizes, const c10::SymInt& num_columns, const char* op);

void check_loss_forward_args(const LossForwardArgs& args);

// Everything check_loss_forward_args checks, and that what the forward saved
// (row_stats, the batch-mean entropies) and the upstream gradients fit the
// inputs: a mismatched row_stats would otherwise be read out of bounds.
void check_loss_backward_args(const LossBackwardArgs& args);

} // namespace hee

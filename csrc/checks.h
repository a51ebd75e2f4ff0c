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

void check_loss_forward_args(const LossForwardArgs& args);

// Everything check_loss_forward_args checks, and that what the forward saved
// (row_stats, the batch-mean entropies) and the upstream gradients fit the
// inputs: a mismatched row_stats would otherwise be read out of bounds.
void check_loss_backward_args(const LossBackwardArgs& args);

} // namespace hee

// The device-independent part of every kernel of both ops, written once:
// which head is present, whether log_std is per sample or shared, the shapes,
// dtypes and strides of every output (placeholders included), the
// accumulation-dtype rule, how the inputs are laid out for the kernels, and
// the gradient scales of the batch means. The Meta, CPU and CUDA kernels
// differ only in how they allocate (TensorSpec) and in the kernels that fill
// what they allocate (docs/design.md, "One plan, every backend").
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/DimVector.h>

#include <optional>
#include <vector>

#include "op_signatures.h"

namespace hee {

// A tensor a kernel allocates: sizes and strides as SymInts (the Meta
// kernels trace dynamic shapes), dtype and device. Backends allocate it with
// their own allocator; the data kernels read it with concrete sizes.
struct TensorSpec {
  c10::SymDimVector sizes;
  c10::SymDimVector strides;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::kCPU;
};

// The strides of a contiguous tensor of `sizes`, as torch gives them (a size
// of 0 counts as 1).
c10::SymDimVector contiguous_strides(c10::SymIntArrayRef sizes);

// float32 for float32 / bfloat16 / float16 inputs, float64 for float64
// (accumulate_type.h, as a ScalarType).
at::ScalarType accumulation_dtype(at::ScalarType input_dtype);

// The dtype of the seven 0-dim outputs: float64 if either head is float64,
// else float32.
at::ScalarType loss_output_dtype(
    const OptionalTensor& logits,
    const OptionalTensor& log_std);

// One categorical of the discrete head (docs/design.md, "Sub-heads"): its
// columns [first_column, first_column + num_columns) of the logits, and its
// collapse threshold (none: no penalty).
struct DiscreteSubHead {
  int64_t first_column = 0;
  int64_t num_columns = 0;
  std::optional<double> threshold;
};

// H, the discrete head's sub-heads: the length of discrete_sizes, else 1.
int64_t num_discrete_heads(at::OptionalIntArrayRef discrete_sizes);
int64_t num_discrete_heads(const LossHyperparameters& h);

// The rows of the hybrid loss's row_stats: m, log s and h of each (sub-)head
// row, and with parameterized actions each row's expected action entropy h_c,
// which the backward reads rather than sweeping the logits again for it.
int64_t loss_row_stats_rows(const LossHyperparameters& h);

// The columns of each sub-head (no thresholds), in order: those of
// discrete_sizes, else one of all num_columns columns. The sizes are checked
// first (check_discrete_sizes_sum_to).
std::vector<DiscreteSubHead> sub_head_columns(
    at::OptionalIntArrayRef discrete_sizes,
    int64_t num_columns);

// The sub-heads of logits with num_columns columns, in order: those of
// discrete_sizes, else one of every column; each with its threshold from
// discrete_head_thresholds, else min_entropy_threshold. For the backends that
// touch data (the sizes are checked first, check_loss_forward_args).
std::vector<DiscreteSubHead> discrete_sub_heads(
    const LossHyperparameters& h,
    int64_t num_columns);

struct LossForwardPlan {
  bool has_discrete = false;
  bool has_continuous = false;
  // The logits split by discrete_sizes: H_d is the sum of the sub-heads'
  // batch entropies, each with its own penalty (math::sub_head_penalty).
  bool has_sub_heads = false;
  int64_t num_discrete_heads = 1;
  // Rows weighted by row_weights: each batch mean is sum_i w_i h_i over
  // sum_i w_i, the weights' sum computed where they live (no device sync).
  bool has_row_weights = false;
  // log_std [B, K, P] or [K, P]: H_c is the mean of each row's expected
  // action entropy (entropy_math.h, "Parameterized actions").
  bool has_parameterized_actions = false;
  TensorSpec component;  // each of the seven 0-dim outputs
  TensorSpec row_stats;  // [3, H * B] in the logits' accumulation dtype
                         // (sub-head h's row i at h * B + i); [4, B] with
                         // parameterized actions (row 3: each row's h_c);
                         // [3, 0] of the output dtype without logits
  TensorSpec discrete_entropy_per_head;  // [H] of the output dtype with
                                         // sub-heads, else [0]
};

// Checks the forward's arguments (checks.h) and plans the call.
LossForwardPlan plan_loss_forward(const LossForwardArgs& args);

struct LossBackwardPlan {
  bool has_discrete = false;
  bool has_continuous = false;
  bool has_row_weights = false;
  bool has_parameterized_actions = false;
  // Which gradients are computed: requested (output_mask) and the input is
  // present. The others are [0] placeholders (a schema cannot return None).
  bool computes_grad_logits = false;
  bool computes_grad_log_std = false;
  bool computes_grad_entropy_coeff = false;
  // grad_logits: contiguous [B, K]. grad_log_std: log_std's shape with all
  // strides 0 (one value: h_c is linear in log_std, so, as torch.sum's
  // backward does, the value is returned broadcast rather than written out);
  // with row weights and a log_std with rows of its own
  // (log_std_has_own_rows), one value per row, strides [1, 0]; with
  // parameterized actions, one value per action of each row (a p[k], the
  // same for its P parameters), strides [K, 1, 0] ([1, 0] for a [K, P]).
  // grad_entropy_coeff: entropy_coeff's shape, on the inputs' device (the
  // autograd engine moves a 0-dim gradient to a CPU coefficient).
  TensorSpec grad_logits;
  TensorSpec grad_log_std;
  TensorSpec grad_entropy_coeff;
};

// Checks the backward's arguments (checks.h) and plans the call.
LossBackwardPlan plan_loss_backward(const LossBackwardArgs& args);

// The inputs as the data kernels read them (for backends that touch data,
// not Meta): logits (and an action mask, laid out alike) with unit column
// stride (any row stride, 0 included),
// and log_std as contiguous rows: [B, D] when each sample has its own, or
// [1, D] when the batch shares one ([D], or [B, D] expanded from a row).
struct KernelLogStd {
  at::Tensor rows;
  bool per_sample = false;
};
at::Tensor logits_for_kernels(const at::Tensor& logits);
// With parameterized actions: rows [B, K * P] of a [B, K, P] log_std
// (per_sample; an expanded one too, whose rows' gradients differ), or one row
// [1, K * P] of a [K, P].
KernelLogStd parameterized_log_std_for_kernels(const at::Tensor& log_std);
OptionalTensor action_mask_for_kernels(const OptionalTensor& action_mask);
KernelLogStd log_std_for_kernels(const at::Tensor& log_std);

// How many terms the batch means average, for the chain rule through them
// (math::mean_term_grad): H_d is the mean of B row entropies; H_c's gradient
// per element of log_std has B terms for [B, D], and 1 for a shared [D],
// which enters every row, so the 1 / B of the mean cancels.
// With row weights the count is their sum instead, which the backends
// compute where the weights live.
double discrete_entropy_mean_count(const at::Tensor& logits);
double continuous_entropy_mean_count(const at::Tensor& log_std);

// The rows a batch mean sums over when a mean_denominator is given and there
// are no row weights (each row then weighs 1, so this is sum_i c_i): those
// of the logits, else of a [B, D] log_std (expanded from one row or not),
// and 1 for a [D] log_std alone.
double batch_row_count(const OptionalTensor& logits, const OptionalTensor& log_std);

// Whether log_std is [B, D] with rows of its own: not a [D], nor a [B, D]
// expanded from one row (a zero row stride), which the kernels read as one
// shared row, and whose entropy row weights do not change (its weighted mean
// is that row's).
bool log_std_has_own_rows(const at::Tensor& log_std);

// A value of a CPU tensor of any floating dtype, element_offset elements
// past its first (no dispatcher round trip).
double read_host_value(const at::Tensor& t, int64_t element_offset = 0);

// The loss parameters the kernels combine the losses with: with sub-heads
// (discrete_sizes) each sub-head's penalty is its own
// (math::sub_head_penalty), so the discrete threshold is taken out.
math::LossParams kernel_loss_params(const LossHyperparameters& h, math::LossParams params);

// The two heads' coefficients from a 0-dim or [2] entropy_coeff held on the
// host (CPU tensor); a device coefficient is read by the device kernels.
math::HeadCoefficients read_host_coefficients(const at::Tensor& entropy_coeff);

} // namespace hee

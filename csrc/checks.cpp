#include "checks.h"

#include <cmath>
#include <limits>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "loss_plan.h"

namespace hee {

void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(
      at::isFloatingType(t.scalar_type()), op, ": ", name,
      " must be a floating tensor (float32, float64, bfloat16 or float16), "
      "got ",
      t.scalar_type());
}

bool same_sizes(c10::SymIntArrayRef a, c10::SymIntArrayRef b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].sym_eq(b[i]).expect_true(__FILE__, __LINE__)) {
      return false;
    }
  }
  return true;
}

void check_action_mask(
    const OptionalTensor& action_mask,
    const at::Tensor& logits,
    const char* op) {
  if (!action_mask.has_value()) {
    return;
  }
  TORCH_CHECK_TYPE(
      action_mask->scalar_type() == at::kBool, op,
      ": action_mask must be bool (False rules an action out), got ",
      action_mask->scalar_type());
  TORCH_CHECK_VALUE(
      same_sizes(action_mask->sym_sizes(), logits.sym_sizes()), op,
      ": action_mask must have the logits' shape ", logits.sym_sizes(),
      ", got ", action_mask->sym_sizes());
  TORCH_CHECK_VALUE(
      action_mask->device() == logits.device(), op,
      ": action_mask must be on the logits' device (", logits.device(),
      "), got ", action_mask->device());
}

void check_discrete_sizes_sum_to(
    at::IntArrayRef sizes, const c10::SymInt& num_columns, const char* op) {
  TORCH_CHECK_VALUE(
      !sizes.empty(), op,
      ": discrete_sizes must list at least one sub-head size, got []");
  int64_t sum = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    TORCH_CHECK_VALUE(
        sizes[i] > 0, op, ": discrete_sizes must be positive, got ", sizes[i],
        " at position ", i, " of ", sizes);
    // Sizes whose sum wraps around could otherwise pass as K.
    TORCH_CHECK_VALUE(
        sizes[i] <= std::numeric_limits<int64_t>::max() - sum, op,
        ": discrete_sizes ", sizes, " overflow int64");
    sum += sizes[i];
  }
  TORCH_CHECK_VALUE(
      num_columns.sym_eq(sum).expect_true(__FILE__, __LINE__), op,
      ": discrete_sizes ", sizes, " sum to ", sum,
      ", but the logits have K = ", num_columns, " columns");
}

namespace {

constexpr const char* kForwardOp = "hybrid_entropy_loss";
constexpr const char* kBackwardOp = "_hybrid_entropy_loss_backward";

#define HEE_SYM_CHECK_VALUE(cond, ...) \
  TORCH_CHECK_VALUE((cond).expect_true(__FILE__, __LINE__), __VA_ARGS__)

void check_finite(double value, const char* op, const char* name) {
  TORCH_CHECK_VALUE(
      std::isfinite(value), op, ": ", name, " must be finite, got ", value);
}

void check_logits(const at::Tensor& logits, const char* op) {
  check_floating(logits, op, "logits");
  TORCH_CHECK_VALUE(
      logits.dim() == 2, op, ": logits must be 2-D [B, K], got shape ",
      logits.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      logits.sym_size(0).sym_gt(0), op,
      ": logits has an empty batch (B = 0); the batch mean of the entropy is "
      "undefined");
  HEE_SYM_CHECK_VALUE(
      logits.sym_size(1).sym_gt(0), op,
      ": logits has zero actions (K = 0); a categorical distribution needs at "
      "least one action");
}

void check_log_std(const at::Tensor& log_std, const char* op) {
  check_floating(log_std, op, "log_std");
  TORCH_CHECK_VALUE(
      log_std.dim() == 1 || log_std.dim() == 2, op,
      ": log_std must be [B, D] or [D] (shared by the batch), got shape ",
      log_std.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      log_std.sym_size(-1).sym_gt(0), op,
      ": log_std has zero action dimensions (D = 0)");
  if (log_std.dim() == 2) {
    HEE_SYM_CHECK_VALUE(
        log_std.sym_size(0).sym_gt(0), op,
        ": log_std has an empty batch (B = 0); the batch mean of the entropy "
        "is undefined");
  }
}

// With parameterized_actions: log_std [B, K, P] (each row's) or [K, P]
// (shared by the batch), K the logits' actions, P >= 1.
void check_parameterized_log_std(
    const at::Tensor& logits,
    const at::Tensor& log_std,
    const char* op) {
  check_floating(log_std, op, "log_std");
  const bool shared = log_std.dim() == 2;
  TORCH_CHECK_VALUE(
      log_std.dim() == 3 || shared, op,
      ": with parameterized_actions, log_std must be [B, K, P] (each discrete "
      "action's P parameters) or [K, P] (shared by the batch), got shape ",
      log_std.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      log_std.sym_size(-2).sym_eq(logits.sym_size(1)), op,
      ": with parameterized_actions, log_std's second-to-last dim must be the "
      "logits' K = ",
      logits.sym_size(1), " (one set of parameters per discrete action), got "
      "log_std ",
      log_std.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      log_std.sym_size(-1).sym_gt(0), op,
      ": log_std has zero parameters per action (P = 0)");
  if (!shared) {
    HEE_SYM_CHECK_VALUE(
        logits.sym_size(0).sym_eq(log_std.sym_size(0)), op,
        ": logits and log_std must have the same batch size, got logits ",
        logits.sym_sizes(), " and log_std ", log_std.sym_sizes());
  }
}

void check_heads(
    const OptionalTensor& logits,
    const OptionalTensor& log_std,
    bool parameterized_actions,
    const char* op) {
  TORCH_CHECK_VALUE(
      logits.has_value() || log_std.has_value(), op,
      ": logits and log_std are both None; pass at least one head");
  TORCH_CHECK_VALUE(
      !parameterized_actions || (logits.has_value() && log_std.has_value()),
      op,
      ": parameterized_actions gives each discrete action its own Gaussian "
      "parameters and needs both heads; got ",
      logits.has_value() ? "logits" : "no logits", " and ",
      log_std.has_value() ? "log_std" : "no log_std");
  if (logits.has_value()) {
    check_logits(*logits, op);
  }
  if (log_std.has_value()) {
    if (parameterized_actions) {
      check_parameterized_log_std(*logits, *log_std, op);
    } else {
      check_log_std(*log_std, op);
    }
  }
  if (logits.has_value() && log_std.has_value()) {
    TORCH_CHECK_VALUE(
        logits->device() == log_std->device(), op,
        ": logits and log_std must be on the same device, got logits on ",
        logits->device(), " and log_std on ", log_std->device());
    if (!parameterized_actions && log_std->dim() == 2) {
      HEE_SYM_CHECK_VALUE(
          logits->sym_size(0).sym_eq(log_std->sym_size(0)), op,
          ": logits and log_std must have the same batch size, got logits ",
          logits->sym_sizes(), " and log_std ", log_std->sym_sizes());
    }
  }
}

// [B], the rows of the logits and of a per-sample log_std, on their device.
void check_row_weights(
    const OptionalTensor& row_weights,
    const OptionalTensor& logits,
    const OptionalTensor& log_std,
    const char* op) {
  if (!row_weights.has_value()) {
    return;
  }
  const at::Tensor& weights = *row_weights;
  check_floating(weights, op, "row_weights");
  const bool per_sample_log_std = log_std.has_value() && log_std->dim() == 2;
  TORCH_CHECK_VALUE(
      logits.has_value() || per_sample_log_std, op,
      ": row_weights weigh the rows of logits or of a [B, D] log_std, and "
      "there are none (log_std is shared, shape ",
      log_std.has_value() ? log_std->sym_sizes() : c10::SymIntArrayRef(),
      ")");
  const at::Tensor& rows = logits.has_value() ? *logits : *log_std;
  TORCH_CHECK_VALUE(
      weights.dim() == 1, op, ": row_weights must be 1-D [B] = [",
      rows.sym_size(0), "], got shape ", weights.sym_sizes());
  HEE_SYM_CHECK_VALUE(
      weights.sym_size(0).sym_eq(rows.sym_size(0)), op,
      ": row_weights must be [B] = [", rows.sym_size(0),
      "] (one weight per row), got shape ", weights.sym_sizes());
  TORCH_CHECK_VALUE(
      weights.device() == rows.device(), op,
      ": row_weights must be on the device of the inputs (", rows.device(),
      "), got ", weights.device());
}

// A 0-dim floating tensor on the inputs' device: the value every batch mean
// divides its weighted sum by.
void check_mean_denominator(
    const OptionalTensor& mean_denominator,
    const at::Tensor& head,
    const char* op) {
  if (!mean_denominator.has_value()) {
    return;
  }
  const at::Tensor& denominator = *mean_denominator;
  check_floating(denominator, op, "mean_denominator");
  TORCH_CHECK_VALUE(
      denominator.dim() == 0, op,
      ": mean_denominator must be 0-dim (one value for every batch mean), got "
      "shape ",
      denominator.sym_sizes());
  TORCH_CHECK_VALUE(
      denominator.device() == head.device(), op,
      ": mean_denominator must be on the device of the inputs (", head.device(),
      "), got ", denominator.device());
}

// 0-dim (both heads) or [2] (discrete, continuous); on the inputs' device,
// or a 0-dim CPU tensor (read on the host, as PyTorch's CPU scalars are).
void check_entropy_coeff(
    const at::Tensor& entropy_coeff,
    const at::Tensor& head,
    const char* op) {
  check_floating(entropy_coeff, op, "entropy_coeff");
  TORCH_CHECK_VALUE(
      entropy_coeff.dim() == 0 ||
          (entropy_coeff.dim() == 1 &&
           entropy_coeff.sym_size(0).sym_eq(2).expect_true(__FILE__, __LINE__)),
      op,
      ": entropy_coeff must be a Python float, a 0-dim tensor, or a tensor of "
      "shape [2] (discrete, continuous), got shape ",
      entropy_coeff.sym_sizes());
  TORCH_CHECK_VALUE(
      entropy_coeff.device() == head.device() ||
          (entropy_coeff.is_cpu() && entropy_coeff.dim() == 0),
      op, ": entropy_coeff must be on the device of the inputs (",
      head.device(), "), or be a 0-dim CPU tensor; got a ",
      entropy_coeff.dim() == 0 ? "0-dim" : "[2]", " tensor on ",
      entropy_coeff.device());
}

// An absent optional hyper-parameter (a disabled threshold) is not checked.
void check_finite(const std::optional<double>& value, const char* op, const char* name) {
  if (value.has_value()) {
    check_finite(*value, op, name);
  }
}

// Each sub-head threshold is finite; sizes are checked with the logits
// (check_discrete_sizes).
void check_finite(const OptionalList<double>& values, const char* op, const char* name) {
  if (values.has_value()) {
    for (const double value : *values.values) {
      check_finite(value, op, name);
    }
  }
}
void check_finite(const OptionalList<int64_t>&, const char*, const char*) {}
void check_finite(bool, const char*, const char*) {}

// Every hyper-parameter is finite (a NaN weight or threshold would poison
// every output silently).
void check_hyperparameters(const LossHyperparameters& h, const char* op) {
#define HEE_CHECK_HYPERPARAMETER(kind, type, name, ...) \
  HEE_WHEN(kind, HYPERPARAMETER, check_finite(h.name, op, #name);)
  HEE_TRAILING_ARGUMENTS(HEE_CHECK_HYPERPARAMETER)
#undef HEE_CHECK_HYPERPARAMETER
}

// A 0-dim tensor of the forward's output dtype on the inputs' device: the
// batch-mean entropies the forward returned, and the upstream gradients of
// the seven outputs.
void check_saved_scalar(
    const at::Tensor& t,
    const at::Tensor& head,
    at::ScalarType output_dtype,
    const char* name) {
  TORCH_CHECK_VALUE(
      t.dim() == 0, kBackwardOp, ": ", name,
      " must be 0-dim (like the forward's outputs), got shape ",
      t.sym_sizes());
  TORCH_CHECK_TYPE(
      t.scalar_type() == output_dtype, kBackwardOp, ": ", name, " must be ",
      output_dtype, " (the dtype of the forward's outputs), got ",
      t.scalar_type());
  TORCH_CHECK_VALUE(
      t.device() == head.device(), kBackwardOp, ": ", name,
      " must be on the device of the inputs (", head.device(), "), got ",
      t.device());
}

// discrete_head_thresholds only with discrete_sizes, one per sub-head;
// discrete_sizes only with logits, each size > 0 and their sum K.
void check_discrete_sizes(
    const LossHyperparameters& h,
    const OptionalTensor& logits,
    const char* op) {
  TORCH_CHECK_VALUE(
      !h.discrete_head_thresholds.has_value() || h.discrete_sizes.has_value(),
      op, ": discrete_head_thresholds are the thresholds of the sub-heads of "
      "discrete_sizes, which is not given (one head's threshold is "
      "min_entropy_threshold)");
  if (!h.discrete_sizes.has_value()) {
    return;
  }
  TORCH_CHECK_VALUE(
      !h.parameterized_actions, op,
      ": parameterized_actions gives the actions of one categorical head their "
      "parameters; discrete_sizes (sub-heads) cannot be combined with it");
  TORCH_CHECK_VALUE(
      logits.has_value(), op,
      ": discrete_sizes splits the logits into sub-heads, but there are no "
      "logits");
  const std::vector<int64_t>& sizes = *h.discrete_sizes.values;
  check_discrete_sizes_sum_to(sizes, logits->sym_size(1), op);
  if (h.discrete_head_thresholds.has_value()) {
    const size_t given = h.discrete_head_thresholds.values->size();
    TORCH_CHECK_VALUE(
        given == sizes.size(), op, ": discrete_head_thresholds must have one "
        "threshold per discrete sub-head (", sizes.size(), "), got ", given);
  }
}

// row_stats as the forward wrote it: [3, H * B] in the accumulation dtype of
// the logits (H sub-heads, 1 without discrete_sizes; 4 rows with
// parameterized actions), contiguous, on their device; [3, 0] without logits.
void check_row_stats(
    const at::Tensor& row_stats,
    const OptionalTensor& logits,
    int64_t num_heads,
    int64_t num_stats) {
  const c10::SymInt rows =
      logits.has_value() ? logits->sym_size(0) * num_heads : c10::SymInt(0);
  TORCH_CHECK_VALUE(
      row_stats.dim() == 2 &&
          row_stats.sym_size(0).sym_eq(num_stats).expect_true(
              __FILE__, __LINE__) &&
          row_stats.sym_size(1).sym_eq(rows).expect_true(__FILE__, __LINE__),
      kBackwardOp, ": row_stats must be [", num_stats, ", H * B] = [",
      num_stats, ", ", rows,
      "] (the forward's per-row statistics of these logits), got shape ",
      row_stats.sym_sizes());
  if (!logits.has_value()) {
    return;
  }
  const at::ScalarType expected = accumulation_dtype(logits->scalar_type());
  TORCH_CHECK_TYPE(
      row_stats.scalar_type() == expected, kBackwardOp,
      ": row_stats must be ", expected, " (the accumulation dtype of ",
      logits->scalar_type(), " logits), got ", row_stats.scalar_type());
  TORCH_CHECK_VALUE(
      row_stats.device() == logits->device(), kBackwardOp,
      ": row_stats must be on the device of the logits (", logits->device(),
      "), got ", row_stats.device());
  TORCH_CHECK_VALUE(
      row_stats.is_contiguous(), kBackwardOp,
      ": row_stats must be contiguous (as the forward returns it), got "
      "strides ",
      row_stats.sym_strides());
}

// The hybrid loss's action_mask: that of its logits, which it needs.
void check_loss_action_mask(
    const OptionalTensor& action_mask,
    const OptionalTensor& logits,
    const char* op) {
  TORCH_CHECK_VALUE(
      !action_mask.has_value() || logits.has_value(), op,
      ": action_mask rules out discrete actions, but there are no logits");
  if (logits.has_value()) {
    check_action_mask(action_mask, *logits, op);
  }
}

} // namespace

void check_loss_forward_args(const LossForwardArgs& args) {
  check_heads(
      args.logits, args.log_std, args.hyperparameters.parameterized_actions,
      kForwardOp);
  check_loss_action_mask(args.action_mask, args.logits, kForwardOp);
  check_entropy_coeff(
      args.entropy_coeff, args.head(), kForwardOp);
  check_hyperparameters(args.hyperparameters, kForwardOp);
  check_discrete_sizes(args.hyperparameters, args.logits, kForwardOp);
  check_row_weights(args.row_weights, args.logits, args.log_std, kForwardOp);
  check_mean_denominator(args.mean_denominator, args.head(), kForwardOp);
}

void check_loss_backward_args(const LossBackwardArgs& args) {
  check_heads(
      args.logits, args.log_std, args.hyperparameters.parameterized_actions,
      kBackwardOp);
  check_loss_action_mask(args.action_mask, args.logits, kBackwardOp);
  const at::Tensor& head = args.head();
  check_entropy_coeff(args.entropy_coeff, head, kBackwardOp);
  check_hyperparameters(args.hyperparameters, kBackwardOp);
  check_discrete_sizes(args.hyperparameters, args.logits, kBackwardOp);
  check_row_weights(args.row_weights, args.logits, args.log_std, kBackwardOp);
  check_mean_denominator(args.mean_denominator, head, kBackwardOp);
  const int64_t num_heads = num_discrete_heads(args.hyperparameters);
  check_row_stats(
      args.row_stats, args.logits, num_heads,
      loss_row_stats_rows(args.hyperparameters));
  const at::ScalarType output_dtype =
      loss_output_dtype(args.logits, args.log_std);
  check_saved_scalar(
      args.discrete_entropy, head, output_dtype, "discrete_entropy");
  check_saved_scalar(
      args.continuous_entropy, head, output_dtype, "continuous_entropy");
  const int64_t per_head_count =
      args.hyperparameters.discrete_sizes.has_value() ? num_heads : 0;
  TORCH_CHECK_VALUE(
      args.discrete_entropy_per_head.dim() == 1 &&
          args.discrete_entropy_per_head.sym_size(0)
              .sym_eq(per_head_count)
              .expect_true(__FILE__, __LINE__),
      kBackwardOp, ": discrete_entropy_per_head must be [", per_head_count,
      "] (one batch entropy per discrete sub-head, none without "
      "discrete_sizes), got shape ",
      args.discrete_entropy_per_head.sym_sizes());
  if (per_head_count > 0) {
    TORCH_CHECK_TYPE(
        args.discrete_entropy_per_head.scalar_type() == output_dtype,
        kBackwardOp, ": discrete_entropy_per_head must be ", output_dtype,
        " (the dtype of the forward's outputs), got ",
        args.discrete_entropy_per_head.scalar_type());
    TORCH_CHECK_VALUE(
        args.discrete_entropy_per_head.device() == head.device(), kBackwardOp,
        ": discrete_entropy_per_head must be on the device of the inputs (",
        head.device(), "), got ", args.discrete_entropy_per_head.device());
  }
#define HEE_GRAD_NAME(name) "grad_" #name,
  static constexpr const char* kGradNames[kNumLossOutputs] = {
      HEE_LOSS_COMPONENTS(HEE_GRAD_NAME)};
#undef HEE_GRAD_NAME
  for (int i = 0; i < kNumLossOutputs; ++i) {
    if (args.grads[i].has_value()) {
      check_saved_scalar(*args.grads[i], head, output_dtype, kGradNames[i]);
    }
  }
}

} // namespace hee

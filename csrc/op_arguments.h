// The arguments and outputs of hybrid_entropy_ext's two ops, declared once.
//
// Each list below is an X-macro: a list of X(...) entries that other code
// expands with its own X. From these lists op_signatures.h derives the
// schemas of both ops, the argument structs every kernel takes, the unboxed
// signatures the dispatcher calls and their adapters, and autograd.cpp the
// backward node's saved values and compiled-autograd collection. Adding an
// argument is one entry here plus the code that uses its value
// (docs/design.md, "Adding an op argument").
#pragma once

// The tensor inputs that receive gradients, in the forward's schema order;
// the backward returns one gradient per entry, in this order, and its
// output_mask has one flag per entry.
//   X(cpp_type, name, schema_type)
#define HEE_DIFFERENTIABLE_INPUTS(X)                 \
  X(::hee::OptionalTensor, logits, "Tensor?")        \
  X(::hee::OptionalTensor, log_std, "Tensor?")       \
  X(::at::Tensor, entropy_coeff, "Tensor")

// The arguments after the differentiable inputs, each with a default, in
// schema order: scalar hyper-parameters (kind HYPERPARAMETER, passed to the
// math) and tensors that receive no gradient (kind INPUT, saved by the
// forward's autograd node for the backward). The backward takes them last,
// in the same order, after output_mask, without defaults (its one caller,
// the node, passes every argument). A new argument is appended at the end,
// so that calls and saved programs written with fewer arguments keep their
// positions.
//   X(kind, cpp_type, name, schema_type, schema_default)
//
// row_weights [B]: each row's weight in the batch means (docs/design.md,
// "Row weights"); None weighs every row 1.
// mean_denominator []: what the batch means divide the weighted sums by
// (docs/design.md, "Row weights"); None divides by the weights' sum.
// action_mask [B, K] bool: False rules a discrete action out, read as a -inf
// logit (math::allowed_logit); None allows every action.
// discrete_sizes [H]: the logits' columns split into H sub-heads of sizes
// K_1..K_H (summing to K), each its own categorical (docs/design.md,
// "Sub-heads"); None is one head of K.
// discrete_head_thresholds [H]: with discrete_sizes, each sub-head's collapse
// threshold in place of min_entropy_threshold; None gives every sub-head
// min_entropy_threshold.
// normalize_discrete_entropy: each row's (sub-)head entropy divided by the
// log of its number of allowed actions (math::entropy_normalizer;
// docs/design.md, "Normalized entropy").
// parameterized_actions: log_std is [B, K, P] or [K, P], each discrete
// action's own Gaussian parameters, and H_c the expected entropy of the
// chosen action's parameters, sum_k p[k] c[k] per row (entropy_math.h and
// docs/design.md, "Parameterized actions").
#define HEE_TRAILING_ARGUMENTS(X)                                             \
  X(HYPERPARAMETER, double, discrete_entropy_weight, "float", "1.0")          \
  X(HYPERPARAMETER, double, continuous_entropy_weight, "float", "0.5")        \
  X(HYPERPARAMETER, std::optional<double>, min_entropy_threshold, "float?",   \
    "0.1")                                                                    \
  X(HYPERPARAMETER, std::optional<double>, continuous_min_entropy_threshold,  \
    "float?", "0.1")                                                          \
  X(HYPERPARAMETER, double, penalty_multiplier, "float", "3.0")               \
  X(INPUT, ::hee::OptionalTensor, row_weights, "Tensor?", "None")          \
  X(INPUT, ::hee::OptionalTensor, mean_denominator, "Tensor?", "None")      \
  X(INPUT, ::hee::OptionalTensor, action_mask, "Tensor?", "None")           \
  X(HYPERPARAMETER, ::hee::OptionalList<int64_t>, discrete_sizes, "int[]?",  \
    "None")                                                                   \
  X(HYPERPARAMETER, ::hee::OptionalList<double>, discrete_head_thresholds,    \
    "float[]?", "None")                                                       \
  X(HYPERPARAMETER, bool, normalize_discrete_entropy, "bool", "False")       \
  X(HYPERPARAMETER, bool, parameterized_actions, "bool", "False")

// HEE_WHEN(kind, WANTED, code...): the code where an entry's kind is WANTED,
// nothing otherwise (for X macros over HEE_TRAILING_ARGUMENTS).
#define HEE_WHEN(kind, wanted, ...) HEE_WHEN_##wanted##_##kind(__VA_ARGS__)
#define HEE_WHEN_HYPERPARAMETER_HYPERPARAMETER(...) __VA_ARGS__
#define HEE_WHEN_HYPERPARAMETER_INPUT(...)
#define HEE_WHEN_INPUT_INPUT(...) __VA_ARGS__
#define HEE_WHEN_INPUT_HYPERPARAMETER(...)

// The forward's differentiable outputs, 0-dim each, in output order; the
// backward takes an optional upstream gradient of each, named grad_<name>.
//   X(name)
#define HEE_LOSS_COMPONENTS(X) \
  X(total)                     \
  X(discrete)                  \
  X(continuous)                \
  X(discrete_penalty)          \
  X(continuous_penalty)        \
  X(discrete_entropy)          \
  X(continuous_entropy)

// The forward's outputs that receive no gradient, after the components:
// row_stats [3, H * B] ([4, B] with parameterized_actions), the per-row
// statistics the backward reads, and with
// discrete_sizes, discrete_entropy_per_head [H], each sub-head's batch
// entropy ([0] without discrete_sizes).
//   X(name)
#define HEE_NONDIFFERENTIABLE_OUTPUTS(X) \
  X(row_stats)                           \
  X(discrete_entropy_per_head)

// The forward's outputs the backward reads (named as above), in the
// backward's schema order after the inputs. is_output: saved as an output of
// the backward node (a differentiable output; saved any other way it would
// hold the node and make a reference cycle).
//   X(name, is_output)
#define HEE_SAVED_OUTPUTS(X)          \
  X(row_stats, false)                 \
  X(discrete_entropy, true)           \
  X(continuous_entropy, true)         \
  X(discrete_entropy_per_head, false)

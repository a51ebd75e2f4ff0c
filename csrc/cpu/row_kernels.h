// Per-row entropy kernels over a block of logits rows, one build per CPU ISA.
//
// Each ISA's translation unit (row_kernels_<isa>.cpp) compiles
// row_kernels_impl.h with its own -m flags and defines these functions in
// namespace hee::cpu::<isa>. They see raw pointers only: no torch headers
// beyond ATen's vector types, so that no inline torch function is compiled
// with ISA flags the running CPU may lack.
#pragma once

#include <cstdint>

#include "../accumulate_type.h"

namespace hee {
namespace cpu {

// Rows [row_begin, row_end) of logits laid out as logits[i * row_stride + k],
// k < num_cols (column stride 1; any row stride, 0 included). The kernels
// compute the statistics of the tempered logits x * scale (the row's shift
// m is the max of x, the moments those of (x - m) * scale:
// math::tempered_log_prob): scale 1 for the hybrid loss (multiplied by
// nothing, so its results are those of the raw logits), 1 / T for tempered
// per-token terms.
//
// An action mask, when given, rules actions out: allowed[i * allowed_row_stride
// + k] false makes z[i, k] a -inf logit whatever is stored there
// (math::allowed_logit); any row stride, 0 included.
template <typename scalar_t>
struct LogitRows {
  const scalar_t* data;
  int64_t row_stride;
  int64_t num_cols;
  acc_t<scalar_t> scale = 1;
  const bool* allowed = nullptr;
  int64_t allowed_row_stride = 0;

  const bool* allowed_row(int64_t row) const {
    return allowed + row * allowed_row_stride;
  }
};

// The per-row statistics the forward keeps for the backward, O(B): the rows
// of the [3, B] row_stats tensor, or of one sub-head's part of [3, H * B]
// (entropy_math.h has the notation, docs/design.md the layout every backend
// shares).
template <typename acc>
struct RowStats {
  acc* shift;        // m[i]: the row max (lowest finite if all masked)
  acc* log_sum_exp;  // log s[i], log of sum_k exp(z[i, k] - m[i])
  acc* entropy;      // h[i], nats
};

// Where the forward writes each row's log-probability of its taken action,
// log_prob[i] = log p[i, actions[i * action_stride]]
// (math::tempered_log_prob), read from the row while it is in registers or
// L1. Both null for none (the hybrid loss). The actions must lie in
// [0, num_cols): the drivers check them first. action_stride is H for one
// sub-head's actions of [N, H].
template <typename acc>
struct TakenLogProbs {
  const int64_t* actions = nullptr;
  acc* log_prob = nullptr;
  int64_t action_stride = 1;
};

// Writes the row statistics of rows [row_begin, row_end), and their
// log-probabilities where `taken` asks for them.
template <typename scalar_t>
using ForwardRowsFn = void (*)(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TakenLogProbs<acc_t<scalar_t>> taken);

// Writes grad_logits[i, k] = s[i] * d h[i] / d z[i, k] for i in the range,
// row i at grad_logits + i * grad_row_stride (>= K; K for a contiguous [B, K]
// buffer, the logits' width for one sub-head's columns of it), where s[i] is
// row_scales[i] (indexed like the rows: weighted or normalized rows) or, with
// row_scales null, grad_scale for every row.
template <typename scalar_t>
using BackwardRowsFn = void (*)(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    acc_t<scalar_t> grad_scale,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    const acc_t<scalar_t>* row_scales);

// The upstream gradients of the per-token terms, one value per row (indexed
// like the rows), each already times the logits' scale, and each row's taken
// action (actions[i * action_stride] in [0, num_cols), as TakenLogProbs').
// grad_log_prob and actions are null without actions.
template <typename acc>
struct TokenGrads {
  const acc* grad_entropy;
  const acc* grad_log_prob;
  const int64_t* actions;
  int64_t action_stride = 1;
};

// Writes grad_logits[i, k] = d (g_a[i] log p[i, a_i] + g_h[i] h[i]) / d x[i, k]
// for i in the range, row i at grad_logits + i * grad_row_stride (>= K).
template <typename scalar_t>
using TokenBackwardRowsFn = void (*)(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TokenGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride);

// Parameterized actions (entropy_math.h): the entropy c[i, k] of each
// discrete action's own Gaussian parameters, at values[i * row_stride + k]
// (row_stride K, or 0 where every row shares one log_std).
template <typename acc>
struct ActionEntropies {
  const acc* values;
  int64_t row_stride;
};

// The forward's row statistics (ForwardRowsFn, no taken actions) and each
// row's expected action entropy, expected[i] = h_c[i] = sum_k p[i, k]
// c[i, k], in one call and one pass over the logits: h_c is the third
// moment sum_k exp(z[k] - m) c[k] over s
// (math::accumulate_softmax_moments_with_value), beside the two the
// statistics need: rows of at most 32 columns in lanes, longer ones (and
// tempered ones, which the hybrid loss never has) along them.
template <typename scalar_t>
using ParameterizedForwardRowsFn = void (*)(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    acc_t<scalar_t>* expected);

// The backward of a parameterized row, one value per row (indexed like the
// rows): g[i] = grad_entropy[i], the scale of d h[i], and a[i] =
// grad_expected[i], that of d h_c[i]; expected_action_entropy[i] = h_c[i]
// from ParameterizedForwardRowsFn.
template <typename acc>
struct ParameterizedGrads {
  const acc* grad_entropy;
  const acc* grad_expected;
  const acc* expected_action_entropy;
};

// Where the backward puts d (a h_c) / d c[i, k] = a[i] p[i, k]: each row's
// at values[i * K + k] (row_stride K, a per-sample log_std), or with
// row_stride 0 their sum over the range's rows added to values[k] (a log_std
// the rows share); values null: nowhere (log_std's gradient is not wanted).
template <typename acc>
struct ActionEntropyGrads {
  acc* values;
  int64_t row_stride;
};

// Writes, for i in the range, grad_logits[i, k] = d (g h + a h_c) / d z[k]
// at grad_logits + i * grad_row_stride (skipped where grad_logits is null),
// and a[i] p[i, k] where grad_action_entropies says.
template <typename scalar_t>
using ParameterizedBackwardRowsFn = void (*)(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    ParameterizedGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    ActionEntropyGrads<acc_t<scalar_t>> grad_action_entropies);

// out[k] = c[k] = math::action_entropy_of_sum(sum_j params[k * P + j], the
// constant of P) for num_actions actions of num_params (P) parameters each,
// laid out one action after another (a parameterized log_std's rows), the sum
// in T (the logits' accumulation type) in the order j = 0..P-1: every ISA
// build gives bitwise the same values.
template <typename scalar_t, typename T>
using ActionEntropiesFn = void (*)(
    const scalar_t* params, int64_t num_actions, int64_t num_params, T* out);

// Sum of n contiguous values in a fixed order (lane-wise, then across lanes):
// the same inputs give bitwise the same sum on every call.
template <typename scalar_t>
using SumValuesFn = acc_t<scalar_t> (*)(const scalar_t* values, int64_t n);

#define HEE_DECLARE_ROW_KERNELS(isa)                                   \
  namespace isa {                                                      \
  template <typename scalar_t>                                         \
  acc_t<scalar_t> sum_values(const scalar_t*, int64_t);                \
  template <typename scalar_t>                                         \
  void forward_rows(                                                   \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>, \
      TakenLogProbs<acc_t<scalar_t>>);                                 \
  template <typename scalar_t>                                         \
  void backward_rows(                                                  \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>, \
      acc_t<scalar_t>, scalar_t*, int64_t, const acc_t<scalar_t>*);    \
  template <typename scalar_t>                                         \
  void token_backward_rows(                                            \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>, \
      TokenGrads<acc_t<scalar_t>>, scalar_t*, int64_t);                \
  template <typename scalar_t>                                         \
  void parameterized_forward_rows(                                     \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>, \
      ActionEntropies<acc_t<scalar_t>>, acc_t<scalar_t>*);             \
  template <typename scalar_t>                                         \
  void parameterized_backward_rows(                                    \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>, \
      ActionEntropies<acc_t<scalar_t>>,                                \
      ParameterizedGrads<acc_t<scalar_t>>, scalar_t*, int64_t,         \
      ActionEntropyGrads<acc_t<scalar_t>>);                            \
  template <typename scalar_t, typename T>                             \
  void action_entropies(const scalar_t*, int64_t, int64_t, T*);        \
  }

HEE_DECLARE_ROW_KERNELS(generic)
HEE_DECLARE_ROW_KERNELS(avx2)
HEE_DECLARE_ROW_KERNELS(avx512)

#undef HEE_DECLARE_ROW_KERNELS

} // namespace cpu
} // namespace hee

// The formulas of hybrid_entropy_ext, in one place: every backend (the CPU
// row kernels, their scalar tails, the CUDA kernels) evaluates these.
//
// Header-only, free of torch, and ready for device code: every function is
// HEE_HOST_DEVICE and uses no constexpr host function (nvcc compiles it
// without --expt-relaxed-constexpr; tests/test_entropy_math.py checks both
// that and the arithmetic on the host). Element formulas are templates over
// the value type `V`: float, double, or a vector type for which a backend
// specializes VectorMath<V> (the CPU's is cpu/vector_math.h).
//
// Notation (per row i of the logits z[i, :], K columns; docs/design.md):
//   m     = max_k z[k]                      the row's shift (see row_shift)
//   s     = sum_k exp(z[k] - m)             shifted partition sum
//   t     = sum_k exp(z[k] - m) (z[k] - m)  shifted first moment
//   h     = log s - t / s                   row entropy, nats
//   log p[k] = (z[k] - m) - log s           log-probability
//   d h / d z[k] = -p[k] (log p[k] + h)
// The backward keeps m and log s apart rather than their sum (the
// logsumexp): for float32 logits of magnitude 1e4, m + log s would round to
// the spacing of 1e4 (about 1e-3) and so would every log p.
//
// A row whose every logit is -inf (a padded or terminal step) is a policy
// with no choice: entropy 0 and gradient 0, never NaN. row_shift and
// row_sum_exp below give it m = lowest finite, s = 1, t = 0, so h = 0, and
// every log p = -inf, which the backward turns into p = 0.
#pragma once

#include <cfloat>
#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HEE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HEE_HOST_DEVICE inline
#endif

// Compiled into one of the per-ISA CPU translation units (which define
// CPU_CAPABILITY), everything here goes into that ISA's inline namespace, as
// ATen's vector code does: otherwise the linker may keep the AVX-512 copy of
// an inline function for every caller, and run it on a CPU without AVX-512.
#if defined(CPU_CAPABILITY) && !defined(__CUDACC__)
#define HEE_MATH_ISA_NAMESPACE_BEGIN inline namespace CPU_CAPABILITY {
#define HEE_MATH_ISA_NAMESPACE_END }
#else
#define HEE_MATH_ISA_NAMESPACE_BEGIN
#define HEE_MATH_ISA_NAMESPACE_END
#endif

namespace hee {
namespace math {
HEE_MATH_ISA_NAMESPACE_BEGIN

// Entropy of N(mu, sigma) per dimension is 0.5*log(2*pi*e) + log(sigma), nats.
constexpr double kGaussianEntropyConstant = 1.41893853320467274178032973640562;

// The customization point for vector types: a backend that evaluates the
// element formulas on a vector type V specializes VectorMath<V> with static
// exp(V), log(V), max(V x, V floor) (NaN in x propagates) and
// multiply_add(V a, V b, V c) = a * b + c. Scalars use the overloads below.
template <typename V>
struct VectorMath;

template <typename V>
inline V exp_of(const V& x) {
  return VectorMath<V>::exp(x);
}
HEE_HOST_DEVICE float exp_of(float x) {
  return ::expf(x);
}
HEE_HOST_DEVICE double exp_of(double x) {
  return ::exp(x);
}

template <typename V>
inline V log_of(const V& x) {
  return VectorMath<V>::log(x);
}
HEE_HOST_DEVICE float log_of(float x) {
  return ::logf(x);
}
HEE_HOST_DEVICE double log_of(double x) {
  return ::log(x);
}

// max(x, floor), except that a NaN x stays NaN (`x < floor` is false for
// NaN), so that a NaN logit is never clamped into a number.
template <typename V>
inline V max_of(const V& x, const V& floor) {
  return VectorMath<V>::max(x, floor);
}
HEE_HOST_DEVICE float max_of(float x, float floor) {
  return x < floor ? floor : x;
}
HEE_HOST_DEVICE double max_of(double x, double floor) {
  return x < floor ? floor : x;
}

// a * b + c (fused where the vector type has an FMA).
template <typename V>
inline V multiply_add(const V& a, const V& b, const V& c) {
  return VectorMath<V>::multiply_add(a, b, c);
}
HEE_HOST_DEVICE float multiply_add(float a, float b, float c) {
  return a * b + c;
}
HEE_HOST_DEVICE double multiply_add(double a, double b, double c) {
  return a * b + c;
}

// The lowest finite value (a plain constant: numeric_limits' functions are
// constexpr host functions, which device code may not call).
template <typename T>
HEE_HOST_DEVICE T lowest_finite();
template <>
HEE_HOST_DEVICE float lowest_finite<float>() {
  return -FLT_MAX;
}
template <>
HEE_HOST_DEVICE double lowest_finite<double>() {
  return -DBL_MAX;
}

template <typename T>
HEE_HOST_DEVICE T negative_infinity() {
  return -static_cast<T>(HUGE_VAL);
}

// The logit an action mask leaves: the logit where the action is allowed,
// -inf where it is ruled out, so that a ruled-out action is exactly a -inf
// logit (probability 0, gradient 0) whatever its stored value, NaN included.
template <typename T>
HEE_HOST_DEVICE T allowed_logit(T logit, bool allowed) {
  return allowed ? logit : negative_infinity<T>();
}

// The shift of a row: its max, or the lowest finite value when every logit
// is -inf, so that z - m is -inf (p = 0) rather than -inf - (-inf) = NaN.
// A NaN max stays NaN.
template <typename V, typename S>
HEE_HOST_DEVICE V row_shift(V row_max, S lowest) {
  return max_of(row_max, V(lowest));
}

// The row's s. At least 1 for any row with a finite logit (its max
// contributes exp(0) = 1); 0 only for a row with every logit masked, which
// becomes 1: log s = 0 and h = 0 for a policy with no choice. NaN stays NaN.
template <typename V>
HEE_HOST_DEVICE V row_sum_exp(V sum_exp) {
  return max_of(sum_exp, V(1));
}

// Forward, one element: adds exp(d) to `sum_exp` and exp(d) * d to
// `sum_exp_times_shift`, with d = z - m (the shifted logit). A masked action
// (d = -inf) has p = 0 and contributes p * log p = 0: clamping d to the
// lowest finite value keeps exp() exact (it underflows to 0) while turning
// 0 * (-inf) = NaN into 0 * finite = 0, as torch.distributions.Categorical
// clamps its logits.
template <typename V, typename S>
HEE_HOST_DEVICE void accumulate_softmax_moments(
    V shifted_logit, S lowest, V& sum_exp, V& sum_exp_times_shift) {
  const V d = max_of(shifted_logit, V(lowest));
  const V e = exp_of(d);
  sum_exp = sum_exp + e;
  sum_exp_times_shift = multiply_add(e, d, sum_exp_times_shift);
}

// accumulate_softmax_moments, bit for bit, and beside it the moment of a
// per-column value: sum_exp_times_value += exp(d) * value. With each
// action's entropy c[k] as the value, sum_exp_times_value / s is a
// parameterized row's h_c = sum_k p[k] c[k] (below), in the same pass as
// its entropy. A masked action's exp(d) = 0 drops its value out (a finite
// one: 0 * inf is NaN).
template <typename V, typename S>
HEE_HOST_DEVICE void accumulate_softmax_moments_with_value(
    V shifted_logit,
    S lowest,
    V value,
    V& sum_exp,
    V& sum_exp_times_shift,
    V& sum_exp_times_value) {
  const V d = max_of(shifted_logit, V(lowest));
  const V e = exp_of(d);
  sum_exp = sum_exp + e;
  sum_exp_times_shift = multiply_add(e, d, sum_exp_times_shift);
  sum_exp_times_value = multiply_add(e, value, sum_exp_times_value);
}

// e^x where a few ulp of relative error are acceptable (the CUDA kernels'
// per-logit loops): on a GPU, 2^(x log2 e) on the special-function unit,
// one multiply and ex2.approx.ftz, with neither expf's range reduction nor
// __expf's subnormal scaling (benchmarks/README.md, "CUDA kernels: SASS
// instructions"). Results below 2^-126 flush to 0, negligible beside a
// row's s >= 1. Elsewhere the
// same formula through exp2, so that a host build of the kernels evaluates
// what the device evaluates. float64 keeps exp.
HEE_HOST_DEVICE float fast_exp_of(float x) {
  const float x_log2e = x * 1.44269504088896340736f;
#if defined(__CUDA_ARCH__)
  float result;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(result) : "f"(x_log2e));
  return result;
#else
  return ::exp2f(x_log2e);
#endif
}
HEE_HOST_DEVICE double fast_exp_of(double x) {
  return ::exp(x);
}

// max(x, y) that ignores a NaN argument (IEEE maxNum; one FMNMX on a GPU).
// Commutative even with NaN, so lanes that combine the same pair in either
// order agree. Only for maxima whose NaN is carried elsewhere (the moments
// below carry a NaN logit through exp).
HEE_HOST_DEVICE float max_ignoring_nan(float x, float y) {
  return ::fmaxf(x, y);
}
HEE_HOST_DEVICE double max_ignoring_nan(double x, double y) {
  return ::fmax(x, y);
}

// How an element formula takes e^x: exactly (exp_of: every CPU kernel, whose
// results are held bitwise across releases) or fast (fast_exp_of: the CUDA
// kernels).
struct ExactExp {
  template <typename V>
  HEE_HOST_DEVICE V operator()(const V& x) const {
    return exp_of(x);
  }
};
struct FastExp {
  template <typename V>
  HEE_HOST_DEVICE V operator()(const V& x) const {
    return fast_exp_of(x);
  }
};

// The form of accumulate_softmax_moments for the CUDA kernels: exp of the
// unclamped d (exp(-inf) = 0 and a NaN logit makes s NaN, as the clamped
// form does), then the clamp only for the product e * d, where it turns
// 0 * (-inf) into 0. With fast_exp_of, a NaN-ignoring max and one FMA.
template <typename T>
HEE_HOST_DEVICE void accumulate_softmax_moments_fast(
    T shifted_logit, T lowest, T& sum_exp, T& sum_exp_times_shift) {
  const T e = fast_exp_of(shifted_logit);
  sum_exp = sum_exp + e;
  sum_exp_times_shift = multiply_add(
      e, max_ignoring_nan(shifted_logit, lowest), sum_exp_times_shift);
}

// The floor of log p in the backward. exp of it is exactly 0 in float32 and
// float64 (below -745.2, the log of the smallest float64 subnormal), so the
// clamp changes no probability; a masked action (log p = -inf) gets
// log p * s finite, and so 0 * finite = 0, for any gradient scale |s| < 3e34.
template <typename T>
HEE_HOST_DEVICE T log_probability_floor() {
  return T(-1.0e4);
}

// A running (max, s, t) moved to a new shift `to` >= its max:
// s' = a s, t' = a (t + s (m - to)), a = exp(m - to). m - to is clamped at
// log_probability_floor (-1e4), whose exp is exactly 0: a part that far below
// contributes (0, 0), and s (m - to) stays finite (an unclamped difference of
// two huge logits, or one that overflows to -inf, would make 0 * inf = NaN).
// A NaN difference is clamped too; the part's NaN s carries the NaN.
// With a scale c (tempered logits, see tempered_log_prob) the moments are of
// (x - m) * c and the shifts stay in the units of x: delta = (m - to) * c.
template <typename T>
HEE_HOST_DEVICE void shift_running_moments(
    T from, T to, T& sum_exp, T& sum_exp_times_shift, T scale = T(1)) {
  const T delta =
      max_ignoring_nan((from - to) * scale, log_probability_floor<T>());
  const T factor = fast_exp_of(delta);
  sum_exp_times_shift =
      factor * multiply_add(sum_exp, delta, sum_exp_times_shift);
  sum_exp = factor * sum_exp;
}

// Row entropy from the moments above: h = log s - t / s.
template <typename V>
HEE_HOST_DEVICE V row_entropy_from_moments(
    V log_sum_exp, V sum_exp, V sum_exp_times_shift) {
  return log_sum_exp - sum_exp_times_shift / sum_exp;
}

// The softmax moments of part of a row (a chunk of columns, one thread's
// share, one block's split), relative to the part's own shift: `max` is the
// largest logit seen, never NaN (a NaN logit is carried by sum_exp), and
// -inf or the lowest finite value while none (or only masked ones) was
// seen, with sum_exp = sum_exp_times_shift = 0.
template <typename T>
struct SoftmaxState {
  T max;
  T sum_exp;
  T sum_exp_times_shift;
};

template <typename T>
HEE_HOST_DEVICE SoftmaxState<T> empty_softmax_state() {
  return {negative_infinity<T>(), T(0), T(0)};
}

// A part's state moved to the shift `to` (at least the part's max and the
// lowest finite value). The CUDA kernels merge parts of a row in two phases:
// the common shift first (the largest max, at least the lowest finite
// value), then each part moved to it once, then plain sums of the moments:
// what the sequential accumulation over all parts gives, up to rounding.
// Empty or fully masked parts contribute (0, 0); a NaN in a part's moments
// propagates.
template <typename T>
HEE_HOST_DEVICE SoftmaxState<T> shifted_state(
    SoftmaxState<T> state, T to, T scale = T(1)) {
  shift_running_moments(
      state.max, to, state.sum_exp, state.sum_exp_times_shift, scale);
  state.max = to;
  return state;
}

// The three per-row statistics the forward keeps for the backward (the
// layout of row_stats, docs/design.md): the shift m, log s and h.
template <typename T>
struct RowStatistics {
  T shift;
  T log_sum_exp;
  T entropy;
};

// Row statistics from a row's complete state (all columns merged).
template <typename T>
HEE_HOST_DEVICE RowStatistics<T> finish_row(const SoftmaxState<T>& row) {
  const T sum_exp = row_sum_exp(row.sum_exp);
  const T log_sum_exp = log_of(sum_exp);
  return {row_shift(row.max, lowest_finite<T>()), log_sum_exp,
          row_entropy_from_moments(
              log_sum_exp, sum_exp, row.sum_exp_times_shift)};
}

// An action's log-probability (z - m) - log s, clamped at
// log_probability_floor, whose exp is exactly 0 (a ruled-out action's p).
template <typename V, typename S>
HEE_HOST_DEVICE V clamped_log_prob(
    V logit, V row_shift_value, V row_log_sum_exp, S log_p_floor) {
  return max_of((logit - row_shift_value) - row_log_sum_exp, V(log_p_floor));
}

// Backward, one element: grad_scale * d h / d z = -s p (log p + h), with
// s = grad_scale and log p clamped at log_probability_floor (a masked action
// gets 0). Written as p (log p * -s + -s h), one FMA and one multiply per
// element once the compiler hoists the row's -s h (benchmarks/README.md,
// "Backward element", has the measurement).
template <typename Exp = ExactExp, typename V, typename S>
HEE_HOST_DEVICE V entropy_grad_element(
    V logit,
    V row_shift_value,
    V row_log_sum_exp,
    V row_entropy,
    V grad_scale,
    S log_p_floor) {
  const V log_p =
      clamped_log_prob(logit, row_shift_value, row_log_sum_exp, log_p_floor);
  const V p = Exp()(log_p);
  const V negative_scale = V(0) - grad_scale;
  return p * multiply_add(log_p, negative_scale, negative_scale * row_entropy);
}

// The per-token terms of one row (log_prob_and_entropy; docs/design.md,
// "Per-token terms") are those of the tempered logits z = x * c, c = 1 / T,
// with the row's shift m taken on x (its max) and the shifted logits
// z - c m = (x - m) * c: shifting before scaling keeps the difference of two
// huge logits exact, where c x - round(c m) would leave the product's
// rounding (or a fused multiply-add's missing one) times the logits'
// magnitude. s and t are the moments of these shifted logits, and
//   log p[k] = (x[k] - m) * c - log s.
template <typename T>
HEE_HOST_DEVICE T tempered_shifted_logit(T logit, T row_shift_value, T scale) {
  return (logit - row_shift_value) * scale;
}
template <typename T>
HEE_HOST_DEVICE T tempered_log_prob(
    T logit, T row_shift_value, T scale, T row_log_sum_exp) {
  return tempered_shifted_logit(logit, row_shift_value, scale) - row_log_sum_exp;
}

// The per-token backward, one element, all but the taken action's own term:
// with g_h and g_a the upstream gradients of the row's entropy and of log p[a]
// (each already times 1 / T, the tempered logits' derivative),
//   d (g_a log p[a] + g_h h) / d x[k] = -p[k] (g_a + g_h (log p[k] + h)) + g_a [k = a],
// and this is the first term, p (log p * -g_h + -(g_a + g_h h)): one FMA and one
// multiply per element once the row's constants are hoisted, as in
// entropy_grad_element. The kernels add g_a to the taken action's element
// where x[a] is finite (a -inf logit is a constant and gets gradient 0; there
// p = 0 makes this term 0). As in log_softmax's backward, g_a - p g_a loses
// digits where p[a] is near 1 (about u / (1 - p) relative to the element):
// the forward's s, 1 plus the other terms, has already rounded them away.
template <typename Exp = ExactExp, typename V, typename S>
HEE_HOST_DEVICE V token_terms_grad_element(
    V logit,
    V row_shift_value,
    V scale,
    V row_log_sum_exp,
    V negative_grad_entropy,
    V negative_row_offset,
    S log_p_floor) {
  const V log_p = max_of(
      tempered_log_prob(logit, row_shift_value, scale, row_log_sum_exp),
      V(log_p_floor));
  const V p = Exp()(log_p);
  return p * multiply_add(log_p, negative_grad_entropy, negative_row_offset);
}

// The row constant -(g_a + g_h h) of token_terms_grad_element.
template <typename T>
HEE_HOST_DEVICE T token_terms_row_offset(
    T grad_log_prob, T grad_entropy, T row_entropy) {
  return T(0) - multiply_add(grad_entropy, row_entropy, grad_log_prob);
}

// The gradient of one of `count` terms of a batch mean, given the mean's
// gradient: grad / count (a division, not a product with 1 / count, which
// rounds differently).
HEE_HOST_DEVICE double mean_term_grad(double grad_of_mean, double count) {
  return grad_of_mean / count;
}

// The gradient of one term x_i of a weighted mean sum_i w_i x_i / sum_i w_i
// (the weights held fixed): w_i times grad_per_term, the mean's gradient
// over the weights' sum (mean_term_grad with the sum as the count).
HEE_HOST_DEVICE double weighted_term_grad(double grad_per_term, double weight) {
  return grad_per_term * weight;
}

// a * b rounded on its own: on a GPU, a product followed by an addition
// compiles to one FMA, which rounds once where an x86 CPU driver's
// baseline-ISA build (no FMA) rounds twice. The Gaussian entropies' constants
// and a shared row's weighted sum go through this, for the same bits on both.
HEE_HOST_DEVICE double rounded_product(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Continuous head: entropy of a diagonal Gaussian with D dimensions whose
// log-std values add up to `sum_log_std`.
HEE_HOST_DEVICE double gaussian_entropy(double sum_log_std, double num_dims) {
  return rounded_product(num_dims, kGaussianEntropyConstant) + sum_log_std;
}

// c = gaussian_entropy(sum_j log_std[j], P) of one parameterized action
// (below, "Parameterized actions") in acc, the logits' accumulation type (the
// one c's consumers, the row kernels' sums of p c, accumulate in): the
// constant P * (1/2) log(2 pi e) in acc, then sum_log_std, each log-std
// converted to acc and added in the order j = 0..P-1, then
// action_entropy_of_sum. Every backend and CPU build adds the same values in
// the same order, so gets the same bits: the constant is rounded on its own
// (the CPU kernels compute it once per call, away from the additions; the
// GPU's through rounded_product), so that no FMA joins it to them. Against a
// double sum rounded to acc, a float sum of P log-stds differs by a few ulps
// of its partial sums: below what the float sums of p c keep, unless the
// log-stds cancel.
template <typename acc>
HEE_HOST_DEVICE acc action_entropy_constant(int64_t num_params) {
  return static_cast<acc>(rounded_product(
      static_cast<double>(num_params), kGaussianEntropyConstant));
}
template <typename acc>
HEE_HOST_DEVICE acc action_entropy_of_sum(acc sum_log_std, acc params_constant) {
  return params_constant + sum_log_std;
}

// H_c = sum_i c_i h_c[i] / denominator, the continuous batch mean with a
// given denominator (docs/design.md, "Row weights"), where sum_i c_i is
// weight_sum. sum_log_std is what the batch pass adds: every row's log-std
// values, each row's weighed by c_i, or with shared_row the one row that
// every sample shares (its h_c is then every row's).
HEE_HOST_DEVICE double gaussian_entropy_over(
    double sum_log_std,
    bool shared_row,
    double weight_sum,
    double num_dims,
    double denominator) {
  const double weighted_sum_log_std =
      shared_row ? rounded_product(weight_sum, sum_log_std) : sum_log_std;
  return (rounded_product(weight_sum * num_dims, kGaussianEntropyConstant) +
          weighted_sum_log_std) /
      denominator;
}

// The gradient of each element of a log_std whose gradient is one value
// (broadcast), for gaussian_entropy_over: `count` rows (1 for a [D]) stand
// for it, together of weight weight_sum, each of their mean weight.
HEE_HOST_DEVICE double broadcast_term_grad(
    double grad_of_mean,
    double denominator,
    double weight_sum,
    double count) {
  return weighted_term_grad(
      mean_term_grad(grad_of_mean, denominator), weight_sum / count);
}

// The scalar hyper-parameters of the loss (docs/design.md, "Semantics").
struct LossParams {
  double discrete_weight;
  double continuous_weight;
  bool has_discrete_threshold;
  double discrete_threshold;
  bool has_continuous_threshold;
  double continuous_threshold;
  double penalty_multiplier;
};

// The seven outputs, in schema order.
struct LossComponents {
  double total;
  double discrete;
  double continuous;
  double discrete_penalty;
  double continuous_penalty;
  double discrete_entropy;
  double continuous_entropy;
};

// A penalty is active only strictly below its threshold and only when the
// head exists; at equality it is 0 and has zero gradient. A NaN entropy
// counts as active so that the penalty is NaN too, never a silent 0.
HEE_HOST_DEVICE bool penalty_active(
    bool has_head, bool has_threshold, double threshold, double batch_entropy) {
  return has_head && has_threshold && !(batch_entropy >= threshold);
}

// The entropy coefficient of each head: one value for both (a 0-dim
// entropy_coeff) or one per head (entropy_coeff of shape [2]).
struct HeadCoefficients {
  double discrete;
  double continuous;
};

HEE_HOST_DEVICE LossComponents combine_losses(
    const HeadCoefficients& coeff,
    bool has_discrete,
    double discrete_entropy,
    bool has_continuous,
    double continuous_entropy,
    const LossParams& p) {
  LossComponents out;
  out.discrete_entropy = discrete_entropy;
  out.continuous_entropy = continuous_entropy;
  out.discrete = -coeff.discrete * p.discrete_weight * discrete_entropy;
  out.continuous = -coeff.continuous * p.continuous_weight * continuous_entropy;
  out.discrete_penalty = penalty_active(has_discrete, p.has_discrete_threshold,
                                        p.discrete_threshold, discrete_entropy)
      ? p.penalty_multiplier * (p.discrete_threshold - discrete_entropy)
      : 0.0;
  out.continuous_penalty =
      penalty_active(has_continuous, p.has_continuous_threshold,
                     p.continuous_threshold, continuous_entropy)
      ? p.penalty_multiplier * (p.continuous_threshold - continuous_entropy)
      : 0.0;
  out.total = out.discrete + out.continuous + out.discrete_penalty +
      out.continuous_penalty;
  return out;
}

// Upstream gradients of the seven outputs; an output nobody used has 0.
using LossGrads = LossComponents;

// Vector-Jacobian product of combine_losses: the gradients with respect to
// the two batch-mean entropies and the two heads' coefficients (a 0-dim
// entropy_coeff gets their sum).
struct BatchEntropyGrads {
  double discrete_entropy;
  double continuous_entropy;
  HeadCoefficients coeff;
};

HEE_HOST_DEVICE BatchEntropyGrads combine_losses_backward(
    const HeadCoefficients& coeff,
    bool has_discrete,
    double discrete_entropy,
    bool has_continuous,
    double continuous_entropy,
    const LossParams& p,
    const LossGrads& g) {
  const double g_discrete = g.total + g.discrete;
  const double g_continuous = g.total + g.continuous;
  const double g_discrete_penalty =
      penalty_active(has_discrete, p.has_discrete_threshold,
                     p.discrete_threshold, discrete_entropy)
      ? g.total + g.discrete_penalty
      : 0.0;
  const double g_continuous_penalty =
      penalty_active(has_continuous, p.has_continuous_threshold,
                     p.continuous_threshold, continuous_entropy)
      ? g.total + g.continuous_penalty
      : 0.0;
  BatchEntropyGrads out;
  out.discrete_entropy = g.discrete_entropy -
      coeff.discrete * p.discrete_weight * g_discrete -
      p.penalty_multiplier * g_discrete_penalty;
  out.continuous_entropy = g.continuous_entropy -
      coeff.continuous * p.continuous_weight * g_continuous -
      p.penalty_multiplier * g_continuous_penalty;
  out.coeff.discrete = -p.discrete_weight * discrete_entropy * g_discrete;
  out.coeff.continuous = -p.continuous_weight * continuous_entropy * g_continuous;
  return out;
}

// Sub-heads (discrete_sizes; docs/design.md, "Sub-heads"): the discrete
// entropy H_d is the sum of the sub-heads' batch entropies H_h, and the
// collapse penalty acts on each, m * sum_h max(0, tau_h - H_h), so that one
// collapsing sub-head is caught whatever the others hold. The loss is
// combine_losses without a discrete threshold, then this penalty.
HEE_HOST_DEVICE double sub_head_penalty(
    double multiplier, bool has_threshold, double threshold, double head_entropy) {
  return penalty_active(true, has_threshold, threshold, head_entropy)
      ? multiplier * (threshold - head_entropy)
      : 0.0;
}

HEE_HOST_DEVICE LossComponents with_discrete_penalty(
    LossComponents out, double discrete_penalty) {
  out.discrete_penalty = discrete_penalty;
  out.total = out.discrete + out.continuous + out.discrete_penalty +
      out.continuous_penalty;
  return out;
}

// The gradient with respect to one sub-head's batch entropy H_h, from
// shared_grad, combine_losses_backward's discrete_entropy without a discrete
// threshold (what every sub-head gets through H_d), and the sub-head's own
// penalty. With one sub-head this is combine_losses_backward's, bit for bit.
HEE_HOST_DEVICE double sub_head_entropy_grad(
    double shared_grad,
    double multiplier,
    bool has_threshold,
    double threshold,
    double head_entropy,
    const LossGrads& g) {
  return penalty_active(true, has_threshold, threshold, head_entropy)
      ? shared_grad - multiplier * (g.total + g.discrete_penalty)
      : shared_grad;
}

// Normalized discrete entropy (normalize_discrete_entropy; docs/design.md,
// "Normalized entropy"): a row's (sub-)head entropy over the log of its number
// of allowed actions n, so that it lies in [0, 1] whatever n; 0 where n <= 1
// (a policy with at most one choice has nothing to normalize). This is the
// factor, 1 / log n or 0; the row's gradient carries it too.
HEE_HOST_DEVICE double entropy_normalizer(int64_t allowed_actions) {
  return allowed_actions > 1
      ? 1.0 / log_of(static_cast<double>(allowed_actions))
      : 0.0;
}

// Parameterized actions (parameterized_actions; docs/design.md,
// "Parameterized actions"): discrete action k of a row has its own P Gaussian
// parameters, of entropy c[k] = gaussian_entropy(sum_j log_std[k, j], P), and
// the row's continuous entropy is the expected entropy of the chosen action's
// parameters, h_c = sum_k p[k] c[k] (the policy "pick k, then sample its
// parameters" has joint entropy h + h_c). Its derivatives:
//   d h_c / d z[k] = p[k] (c[k] - h_c),   d h_c / d c[k] = p[k],
// so a ruled-out action (p = 0) drops out of both while its c[k] is finite.

// Backward of a row of a parameterized policy, one element: the gradient of
// g h + a h_c with respect to z[k] (g, a the row's scales of its entropy and
// of its expected action entropy),
//   -g p (log p + h) + a p (c[k] - h_c) = p (log p * -g + (a c[k] + row_offset)),
// row_offset = -(g h + a h_c) (parameterized_row_offset): one FMA more per
// element than entropy_grad_element.
template <typename V>
HEE_HOST_DEVICE V parameterized_grad_element(
    V p,
    V log_p,
    V negative_grad_entropy,
    V grad_expected,
    V action_entropy_value,
    V row_offset) {
  return p *
      multiply_add(
          log_p, negative_grad_entropy,
          multiply_add(grad_expected, action_entropy_value, row_offset));
}

template <typename T>
HEE_HOST_DEVICE T parameterized_row_offset(
    T grad_entropy, T row_entropy, T grad_expected, T row_expected) {
  return T(0) -
      multiply_add(grad_entropy, row_entropy, grad_expected * row_expected);
}

HEE_MATH_ISA_NAMESPACE_END
} // namespace math
} // namespace hee

// The formulas of hybrid_entropy_ext, in one place.
//
// Everything here is header-only and free of torch includes so that the CPU
// kernels (scalar and at::vec::Vectorized lanes) and device code can share it.
// Element formulas are templates over the value type `V`: a scalar
// (float/double) or a SIMD vector type for which the kernel provides the
// overloads `exp_of(V)`, `log_of(V)` and `max_of(V, V)`.
//
// Notation (per row i of the logits z[i, :], K columns):
//   m     = max_k z[k]                      row max
//   s     = sum_k exp(z[k] - m)             shifted partition sum
//   t     = sum_k exp(z[k] - m) (z[k] - m)  shifted first moment
//   h     = log s - t / s                   row entropy, nats
//   log p[k] = (z[k] - m) - log s           log-probability
//   d h / d z[k] = -p[k] (log p[k] + h)
// The backward keeps m and log s apart rather than their sum (the
// logsumexp): for float32 logits of magnitude 1e4, m + log s would round to
// the spacing of 1e4 (about 1e-3) and so would every log p.
#pragma once

#include <cmath>
#include <limits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HEE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HEE_HOST_DEVICE inline
#endif

namespace hee {
namespace math {

// Entropy of N(mu, sigma) per dimension is 0.5*log(2*pi*e) + log(sigma), nats.
constexpr double kGaussianEntropyConstant = 1.41893853320467274178032973640562;

// exp, log and a NaN-propagating max for scalars and SIMD vectors. SimdOps is
// the customization point for vector types: by default it uses member exp()
// and log() and a static blendv() (at::vec::Vectorized has them); a kernel may
// specialize it with faster inline versions for its vector type.
// `x < floor` is false for NaN, so NaN passes through max_of.
template <typename V>
struct SimdOps {
  static V exp(const V& x) {
    return x.exp();
  }
  static V log(const V& x) {
    return x.log();
  }
  static V max(const V& x, const V& floor) {
    return V::blendv(x, floor, x < floor);
  }
  static V multiply_add(const V& a, const V& b, const V& c) {
    return a * b + c;
  }
};

template <typename V>
inline V exp_of(const V& x) {
  return SimdOps<V>::exp(x);
}
HEE_HOST_DEVICE float exp_of(float x) {
  return ::expf(x);
}
HEE_HOST_DEVICE double exp_of(double x) {
  return ::exp(x);
}

template <typename V>
inline V log_of(const V& x) {
  return SimdOps<V>::log(x);
}
HEE_HOST_DEVICE float log_of(float x) {
  return ::logf(x);
}
HEE_HOST_DEVICE double log_of(double x) {
  return ::log(x);
}

template <typename V>
inline V max_of(const V& x, const V& floor) {
  return SimdOps<V>::max(x, floor);
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
  return SimdOps<V>::multiply_add(a, b, c);
}
HEE_HOST_DEVICE float multiply_add(float a, float b, float c) {
  return a * b + c;
}
HEE_HOST_DEVICE double multiply_add(double a, double b, double c) {
  return a * b + c;
}

// A masked action (-inf logit) has p = 0 and contributes p * log p = 0.
// Clamping the shifted logit to the lowest finite value keeps exp() exact
// (it underflows to 0) while turning 0 * (-inf) = NaN into 0 * finite = 0;
// torch.distributions.Categorical clamps its logits the same way.
template <typename T>
HEE_HOST_DEVICE T lowest_finite() {
  return std::numeric_limits<T>::lowest();
}

// Forward, one element: adds exp(d) to `sum_exp` and exp(d) * d to
// `sum_exp_times_shift`, with d = z - m (the shifted logit).
template <typename V, typename S>
HEE_HOST_DEVICE void accumulate_softmax_moments(
    V shifted_logit, S lowest, V& sum_exp, V& sum_exp_times_shift) {
  const V d = max_of(shifted_logit, V(lowest));
  const V e = exp_of(d);
  sum_exp = sum_exp + e;
  sum_exp_times_shift = multiply_add(e, d, sum_exp_times_shift);
}

// Row entropy from the moments above: h = log s - t / s.
template <typename V>
HEE_HOST_DEVICE V row_entropy_from_moments(
    V log_sum_exp, V sum_exp, V sum_exp_times_shift) {
  return log_sum_exp - sum_exp_times_shift / sum_exp;
}

// The floor of log p in the backward. exp of it is exactly 0 in float32 and
// float64 (below -745.2, the log of the smallest float64 subnormal), so the
// clamp changes no probability; a masked action (log p = -inf) gets
// log p * s finite, and so 0 * finite = 0, for any gradient scale |s| < 3e34.
template <typename T>
HEE_HOST_DEVICE T log_probability_floor() {
  return T(-1.0e4);
}

// Backward, one element: grad_scale * d h / d z = -s p (log p + h), with
// s = grad_scale and log p clamped at log_probability_floor (a masked action
// gets 0). Written as p (log p * -s + -s h): one FMA and one multiply per
// element once the compiler hoists the row's -s h, two instructions fewer
// than the formula as it reads (AVX-512, K = 64: 0.28 -> 0.265 ns per logit).
template <typename V, typename S>
HEE_HOST_DEVICE V entropy_grad_element(
    V logit,
    V row_max,
    V row_log_sum_exp,
    V row_entropy,
    V grad_scale,
    S log_p_floor) {
  const V log_p = max_of((logit - row_max) - row_log_sum_exp, V(log_p_floor));
  const V p = exp_of(log_p);
  const V negative_scale = V(0) - grad_scale;
  return p * multiply_add(log_p, negative_scale, negative_scale * row_entropy);
}

// Continuous head: entropy of a diagonal Gaussian with D dimensions whose
// log-std values add up to `sum_log_std`.
HEE_HOST_DEVICE double gaussian_entropy(double sum_log_std, double num_dims) {
  return num_dims * kGaussianEntropyConstant + sum_log_std;
}

// The scalar hyper-parameters of the loss (DESIGN.md "Semantics").
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

} // namespace math
} // namespace hee

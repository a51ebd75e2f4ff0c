// A C interface to the scalar formulas of csrc/entropy_math.h, compiled for the
// host by tests/test_entropy_math.py and called through ctypes: the same
// source the CUDA kernels compile for the device, so a run without a GPU
// still covers the arithmetic the GPU runs.
#include <cstdint>

#include "entropy_math.h"
#include "loss_params_array.h"

using namespace hee::math;

namespace {

template <typename T>
SoftmaxState<T> state_of(const T* values) {
  return {values[0], values[1], values[2]};
}

template <typename T>
void store_state(const SoftmaxState<T>& s, T* out) {
  out[0] = s.max;
  out[1] = s.sum_exp;
  out[2] = s.sum_exp_times_shift;
}

// The state of z[0..n) accumulated in one sequential pass, shifted by its
// max: what a kernel that holds a whole row computes.
template <typename T>
SoftmaxState<T> sequential_state(const T* z, int64_t n) {
  T row_max = negative_infinity<T>();
  for (int64_t k = 0; k < n; ++k) {
    row_max = max_of(z[k], row_max);
  }
  const T shift = row_shift(row_max, lowest_finite<T>());
  T sum_exp = T(0);
  T sum_exp_times_shift = T(0);
  for (int64_t k = 0; k < n; ++k) {
    accumulate_softmax_moments(
        z[k] - shift, lowest_finite<T>(), sum_exp, sum_exp_times_shift);
  }
  return {row_max, sum_exp, sum_exp_times_shift};
}

// Two parts merged as the CUDA kernels' reductions merge many (shifted_state):
// the common shift, each part moved to it, the sums.
template <typename T>
SoftmaxState<T> merged(const SoftmaxState<T>& a, const SoftmaxState<T>& b) {
  const T to = max_ignoring_nan(max_ignoring_nan(a.max, b.max), lowest_finite<T>());
  const SoftmaxState<T> a_moved = shifted_state(a, to);
  const SoftmaxState<T> b_moved = shifted_state(b, to);
  return {to, a_moved.sum_exp + b_moved.sum_exp,
          a_moved.sum_exp_times_shift + b_moved.sum_exp_times_shift};
}

} // namespace

extern "C" {

void hee_merge_f64(const double* a, const double* b, double* out) {
  store_state(merged(state_of(a), state_of(b)), out);
}

void hee_merge_f32(const float* a, const float* b, float* out) {
  store_state(merged(state_of(a), state_of(b)), out);
}

void hee_sequential_state_f64(const double* z, int64_t n, double* out) {
  store_state(sequential_state(z, n), out);
}

void hee_sequential_state_f32(const float* z, int64_t n, float* out) {
  store_state(sequential_state(z, n), out);
}

// (shift, log s, entropy) of a complete row state.
void hee_finish_row_f64(const double* state, double* out) {
  const RowStatistics<double> r = finish_row(state_of(state));
  out[0] = r.shift;
  out[1] = r.log_sum_exp;
  out[2] = r.entropy;
}

void hee_finish_row_f32(const float* state, float* out) {
  const RowStatistics<float> r = finish_row(state_of(state));
  out[0] = r.shift;
  out[1] = r.log_sum_exp;
  out[2] = r.entropy;
}

double hee_entropy_grad_element_f64(
    double logit, double shift, double log_sum_exp, double entropy,
    double grad_scale) {
  return entropy_grad_element(
      logit, shift, log_sum_exp, entropy, grad_scale,
      log_probability_floor<double>());
}

// params: w_d, w_c, has tau_d, tau_d, has tau_c, tau_c, m. out: the seven
// components in schema order.
void hee_combine_losses(
    double coeff_discrete, double coeff_continuous, int has_discrete,
    double discrete_entropy, int has_continuous, double continuous_entropy,
    const double* params, double* out) {
  const LossComponents c = combine_losses(
      {coeff_discrete, coeff_continuous}, has_discrete != 0, discrete_entropy,
      has_continuous != 0, continuous_entropy, loss_params_from_array(params));
  const double values[7] = {c.total, c.discrete, c.continuous,
                            c.discrete_penalty, c.continuous_penalty,
                            c.discrete_entropy, c.continuous_entropy};
  for (int i = 0; i < 7; ++i) {
    out[i] = values[i];
  }
}

// grads: upstream gradients of the seven components. out: d/dH_d, d/dH_c,
// d/dc_d, d/dc_c.
void hee_combine_losses_backward(
    double coeff_discrete, double coeff_continuous, int has_discrete,
    double discrete_entropy, int has_continuous, double continuous_entropy,
    const double* params, const double* grads, double* out) {
  LossGrads g;
  g.total = grads[0];
  g.discrete = grads[1];
  g.continuous = grads[2];
  g.discrete_penalty = grads[3];
  g.continuous_penalty = grads[4];
  g.discrete_entropy = grads[5];
  g.continuous_entropy = grads[6];
  const BatchEntropyGrads r = combine_losses_backward(
      {coeff_discrete, coeff_continuous}, has_discrete != 0, discrete_entropy,
      has_continuous != 0, continuous_entropy, loss_params_from_array(params), g);
  out[0] = r.discrete_entropy;
  out[1] = r.continuous_entropy;
  out[2] = r.coeff.discrete;
  out[3] = r.coeff.continuous;
}

} // extern "C"

// Instantiates every formula of csrc/entropy_math.h in device code, for
// tests/test_entropy_math.py to compile with nvcc, warnings as errors and
// without --expt-relaxed-constexpr: the shared header must not need it.
#include "entropy_math.h"

using namespace hee::math;

template <typename T>
__device__ void use_formulas(const T* z, int n, T* out) {
  SoftmaxState<T> state = empty_softmax_state<T>();
  for (int k = 0; k < n; ++k) {
    T sum_exp = T(0);
    T sum_exp_times_shift = T(0);
    accumulate_softmax_moments(
        z[k] - z[0], lowest_finite<T>(), sum_exp, sum_exp_times_shift);
    accumulate_softmax_moments_fast(
        z[k] - z[0], lowest_finite<T>(), sum_exp, sum_exp_times_shift);
    const SoftmaxState<T> part = shifted_state<T>({z[k], sum_exp, sum_exp_times_shift}, z[0]);
    state = {z[0], state.sum_exp + part.sum_exp,
             state.sum_exp_times_shift + part.sum_exp_times_shift};
  }
  const RowStatistics<T> row = finish_row(state);
  out[0] = row.shift + row_sum_exp(row.log_sum_exp);
  out[1] = entropy_grad_element(
      z[0], row.shift, row.log_sum_exp, row.entropy, T(0.5),
      log_probability_floor<T>());
}

__global__ void formulas_kernel(
    const float* zf, const double* zd, int n, float* of, double* od) {
  use_formulas(zf, n, of);
  use_formulas(zd, n, od);
  LossParams params{1.0, 0.5, true, 0.1, false, 0.0, 3.0};
  const LossComponents c =
      combine_losses({0.1, 0.2}, true, od[0], true, od[1], params);
  LossGrads g{1, 0, 0, 0, 0, 0, 0};
  const BatchEntropyGrads back = combine_losses_backward(
      {0.1, 0.2}, true, od[0], true, od[1], params, g);
  od[2] = c.total + back.discrete_entropy + back.coeff.continuous +
      gaussian_entropy(od[1], 3.0);
}

// The loss's hyper-parameters from the seven doubles the Python tests pass
// through ctypes: w_d, w_c, has tau_d, tau_d, has tau_c, tau_c, m.
#pragma once

#include "entropy_math.h"

inline hee::math::LossParams loss_params_from_array(const double* p) {
  hee::math::LossParams params;
  params.discrete_weight = p[0];
  params.continuous_weight = p[1];
  params.has_discrete_threshold = p[2] != 0.0;
  params.discrete_threshold = p[3];
  params.has_continuous_threshold = p[4] != 0.0;
  params.continuous_threshold = p[5];
  params.penalty_multiplier = p[6];
  return params;
}

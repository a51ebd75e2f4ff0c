// The accumulation type of each input dtype, for every backend: float32 for
// float32, bfloat16 and float16 inputs, float64 for float64 (docs/design.md,
// "Dtypes"). loss_plan.cpp derives the ScalarType rule from this one.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace hee {

template <typename scalar_t>
struct AccumulateType {
  using type = float;
};
template <>
struct AccumulateType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_t = typename AccumulateType<scalar_t>::type;

} // namespace hee

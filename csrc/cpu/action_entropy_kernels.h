// The action entropies of a parameterized policy's log_std (row_kernels.h,
// ActionEntropiesFn), one per ISA build: included by each
// row_kernels_<isa>.cpp after row_kernels_impl.h.
//
// A per-sample [B, K, P] log_std gives one c[i, k] per logit, computed in
// both passes, so this sum of P values is as hot as the logits' own work.
// Every build adds in T, the logits' accumulation type, in the order
// j = 0..P-1 and then adds the constant, as math::action_entropy_of_sum says:
// the ISAs differ only in how many actions they do at once, never in the
// bits.
#ifndef HEE_ISA
#error "define HEE_ISA (the ISA namespace) before including action_entropy_kernels.h"
#endif

#include "x86_intrinsics.h"

#include <cstdint>
#include <type_traits>

#include "../entropy_math.h"
#include "row_kernels.h"

namespace hee {
namespace cpu {
namespace HEE_ISA {
namespace {

// One action at a time; NumParams is int64_t or a std::integral_constant (a
// P known at compile time, whose loop the compiler unrolls and vectorizes
// across actions in this ISA's instructions).
template <typename NumParams, typename scalar_t, typename T>
void action_entropies_of_params(
    const scalar_t* params, int64_t begin, int64_t end, NumParams num_params,
    T* out) {
  const int64_t P = num_params;
  const T params_constant = math::action_entropy_constant<T>(P);
  for (int64_t k = begin; k < end; ++k) {
    T sum_log_std = 0;
    for (int64_t j = 0; j < P; ++j) {
      sum_log_std += static_cast<T>(params[k * P + j]);
    }
    out[k] = math::action_entropy_of_sum(sum_log_std, params_constant);
  }
}

#if defined(CPU_CAPABILITY_AVX2)
// Three float32 parameters per action (the common P = 3, a 2-D position and a
// strength, say), eight actions per step. The compiler's own vectorization of
// the loop above moves the stride-3 values one at a time; here the three
// vectors of 24 values are unzipped by blends and one permute per parameter.
// Returns the actions done (a multiple of 8).
int64_t action_entropies_of_three_floats(
    const float* params, int64_t num_actions, float* out) {
  // math::action_entropy_of_sum, lane by lane.
  const __m256 params_constant =
      _mm256_set1_ps(math::action_entropy_constant<float>(3));
  // After the blends, the first parameter of action l of the eight is in
  // lane x_order[l] of the blended vector (y_order, z_order alike for the
  // second and third): the permutes put it in lane l.
  const __m256i x_order = _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5);
  const __m256i y_order = _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6);
  const __m256i z_order = _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7);
  const int64_t whole = num_actions - num_actions % 8;
  for (int64_t k = 0; k < whole; k += 8) {
    // a = x0 y0 z0 x1 y1 z1 x2 y2, b = z2 x3 y3 z3 x4 y4 z4 x5,
    // c = y5 z5 x6 y6 z6 x7 y7 z7.
    const __m256 a = _mm256_loadu_ps(params + 3 * k);
    const __m256 b = _mm256_loadu_ps(params + 3 * k + 8);
    const __m256 c = _mm256_loadu_ps(params + 3 * k + 16);
    const __m256 x = _mm256_permutevar8x32_ps(
        _mm256_blend_ps(_mm256_blend_ps(a, b, 0b10010010), c, 0b00100100),
        x_order);
    const __m256 y = _mm256_permutevar8x32_ps(
        _mm256_blend_ps(_mm256_blend_ps(a, b, 0b00100100), c, 0b01001001),
        y_order);
    const __m256 z = _mm256_permutevar8x32_ps(
        _mm256_blend_ps(_mm256_blend_ps(a, b, 0b01001001), c, 0b10010010),
        z_order);
    // The scalar loop adds ((0 + x) + y) + z: the same bits but for the sign
    // of a zero sum, which adding the constant drops.
    _mm256_storeu_ps(
        out + k,
        _mm256_add_ps(params_constant, _mm256_add_ps(_mm256_add_ps(x, y), z)));
  }
  return whole;
}
#endif

} // namespace

template <typename scalar_t, typename T>
void action_entropies(
    const scalar_t* params, int64_t num_actions, int64_t num_params, T* out) {
  // The common small P unrolled: a loop of runtime length per action costs
  // more than its sum.
  switch (num_params) {
    case 1:
      return action_entropies_of_params(
          params, 0, num_actions, std::integral_constant<int64_t, 1>{}, out);
    case 2:
      return action_entropies_of_params(
          params, 0, num_actions, std::integral_constant<int64_t, 2>{}, out);
    case 3: {
      int64_t done = 0;
#if defined(CPU_CAPABILITY_AVX2)
      if constexpr (
          std::is_same_v<scalar_t, float> && std::is_same_v<T, float>) {
        done = action_entropies_of_three_floats(params, num_actions, out);
      }
#endif
      return action_entropies_of_params(
          params, done, num_actions, std::integral_constant<int64_t, 3>{},
          out);
    }
    case 4:
      return action_entropies_of_params(
          params, 0, num_actions, std::integral_constant<int64_t, 4>{}, out);
    default:
      return action_entropies_of_params(
          params, 0, num_actions, num_params, out);
  }
}

#define HEE_INSTANTIATE_ACTION_ENTROPIES(scalar_t)                       \
  template void action_entropies<scalar_t, float>(                     \
      const scalar_t*, int64_t, int64_t, float*);                      \
  template void action_entropies<scalar_t, double>(                    \
      const scalar_t*, int64_t, int64_t, double*);

HEE_INSTANTIATE_ACTION_ENTROPIES(float)
HEE_INSTANTIATE_ACTION_ENTROPIES(double)
HEE_INSTANTIATE_ACTION_ENTROPIES(c10::Half)
HEE_INSTANTIATE_ACTION_ENTROPIES(c10::BFloat16)

#undef HEE_INSTANTIATE_ACTION_ENTROPIES

} // namespace HEE_ISA
} // namespace cpu
} // namespace hee

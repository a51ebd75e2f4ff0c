// math::VectorMath for at::vec::Vectorized lanes: how the shared formulas of
// entropy_math.h evaluate exp, log, the NaN-propagating max and the
// multiply-add on a CPU vector. Included by row_kernels_impl.h only, so every
// ISA build gets its own (Vectorized itself lives in ATen's per-ISA inline
// namespace, and so does this).
#pragma once

#ifndef CPU_CAPABILITY
#error "compile this header only in a per-ISA translation unit (one that defines CPU_CAPABILITY)"
#endif

#include <type_traits>

#include <ATen/cpu/vec/vec.h>

#include "../entropy_math.h"
#include "simd_math.h"

namespace hee {
namespace math {
inline namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// float32 and float64 lanes use the inline exp (simd_math.h) and a
// one-instruction clamp: max returns its second operand when either is NaN,
// so NaN in x propagates. float32 also has an inline log; float64 takes the
// log, once per row, from Sleef.
template <typename T>
struct VectorMath<at::vec::Vectorized<T>> {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using V = at::vec::Vectorized<T>;
  static V exp(const V& x) {
    if constexpr (std::is_same_v<T, float>) {
      return V(cpu::simd_math::exp_ps(x));
    } else {
      return V(cpu::simd_math::exp_pd(x));
    }
  }
  static V log(const V& x) {
    if constexpr (std::is_same_v<T, float>) {
      return V(cpu::simd_math::log_ps(x));
    } else {
      return x.log();
    }
  }
  static V max(const V& x, const V& floor) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, float>) {
      return V(_mm512_max_ps(floor, x));
    } else {
      return V(_mm512_max_pd(floor, x));
    }
#else
    if constexpr (std::is_same_v<T, float>) {
      return V(_mm256_max_ps(floor, x));
    } else {
      return V(_mm256_max_pd(floor, x));
    }
#endif
  }
  static V multiply_add(const V& a, const V& b, const V& c) {
    return at::vec::fmadd(a, b, c);
  }
};
#else
// The baseline build: Vectorized's own exp and log, and a blend for the
// clamp (`x < floor` is false for NaN, so NaN passes through).
template <typename T>
struct VectorMath<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
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
#endif

} // namespace CPU_CAPABILITY
} // namespace math
} // namespace hee

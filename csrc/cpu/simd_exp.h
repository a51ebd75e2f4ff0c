// Inline float32 exp for AVX2 and AVX-512 row kernels.
//
// Why not Vectorized<float>::exp(): that is a call into the vector math
// library, and every vector register is caller-saved, so each call spills and
// reloads the kernel's live accumulators. Inlined, exp costs a dozen FMAs.
//
// x = n ln2 + r with |r| <= ln2 / 2 (Cephes' two-part ln2), exp(r) by a
// degree-6 polynomial in Horner form (Chebyshev fit on [-ln2/2, ln2/2], absolute
// error 2e-9), then scaled by 2^n. Checked against double exp on every third
// float in [-87.3, 0]: at most 1.07 ulp, mean 0.063 ulp (Cephes' degree-7
// expf, two FMAs more: 1.26 and 0.073). Results below FLT_MIN are flushed to
// 0 (absolute error < 1.2e-38), which keeps exp(lowest finite) exactly 0 for
// masked actions. NaN propagates.
#pragma once

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

namespace hee {
namespace cpu {
namespace simd_exp {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kMinArg = -87.3365447504f;  // log(FLT_MIN)
constexpr float kMaxArg = 88.0f;            // AVX2: 2^n built from exponent bits stays finite
// exp(r) ~ sum_i kC[i] r^i (kC0 = 1).
constexpr float kC1 = 1.0000000377e+00f;
constexpr float kC2 = 5.0000000471e-01f;
constexpr float kC3 = 1.6666415515e-01f;
constexpr float kC4 = 4.1666352897e-02f;
constexpr float kC5 = 8.3751263982e-03f;
constexpr float kC6 = 1.3941108434e-03f;

#if defined(CPU_CAPABILITY_AVX512)
inline __m512 exp_ps(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMinArg), _CMP_LT_OQ);
  // max returns its second operand when either is NaN: NaN stays NaN. No
  // upper clamp: scalef overflows to inf past 88.7 by itself.
  x = _mm512_max_ps(_mm512_set1_ps(kMinArg), x);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kC6);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC5));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~underflow), p, n);
}
#endif

#if defined(CPU_CAPABILITY_AVX2)
inline __m256 exp_ps(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(kMinArg), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(kMaxArg), x);
  x = _mm256_max_ps(_mm256_set1_ps(kMinArg), x);
  const __m256 n = _mm256_round_ps(
      _mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kC6);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC5));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i biased_exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(biased_exponent, 23));
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, scale));
}
#endif

} // namespace simd_exp
} // namespace cpu
} // namespace hee

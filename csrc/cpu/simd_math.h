// Inline float32 exp and log, and float64 exp, for AVX2 and AVX-512 row
// kernels.
//
// Why not Vectorized<float>::exp() / log(): those are calls into the vector
// math library, and every vector register is caller-saved, so each call
// spills and reloads the kernel's live accumulators (with the library's log,
// the one log per row was a large share of the forward at small K:
// benchmarks/README.md, "Inline SIMD exp and log: speed"). Inlined, exp costs
// a dozen FMAs and log about twenty instructions.
//
// exp: x = n ln2 + r with |r| <= ln2 / 2 (Cephes' two-part ln2), exp(r) by a
// degree-5 polynomial in Horner form (near-minimax fit of the relative error
// on [-ln2/2, ln2/2], 9.1e-8, constant term 1: scripts/fit_exp_polynomial.py),
// then scaled by 2^n. Degree 5 rather than 6 saves one FMA per vector in
// every row kernel at the price of a larger error (Cephes' expf is degree 7).
// Results below FLT_MIN are flushed to 0 (absolute error < 1.2e-38), which
// keeps exp(lowest finite) exactly 0 for masked actions. NaN propagates.
//
// log: x = m 2^e with m in [0.75, 1.5), log x = e ln2 + log1p(t), t = m - 1,
// log1p(t) = t - t^2/2 + t^3 Q(t) with Q of degree 8 (Chebyshev fit on
// [-0.25, 0.5]). log 0 = -inf, log +inf = +inf, NaN and x < 0 give NaN. The
// AVX2 version reads the exponent bits, so it is wrong for subnormal x (the
// kernels take the log of row sums, which are >= 1).
//
// benchmarks/cpp/simd_math_accuracy.cpp measures both against libm (and the
// float64 exp below against expl). Its ulp figures for these functions and
// for the degree-6 and degree-7 exps they replaced, and the time the lower
// degree saves, are in benchmarks/README.md ("Inline SIMD exp and log").
#pragma once

#ifndef CPU_CAPABILITY
#error "compile this header only in a per-ISA translation unit (one that defines CPU_CAPABILITY)"
#endif

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include <limits>
#include <utility>

namespace hee {
namespace cpu {
// One copy per ISA build, never merged by the linker with another build's
// (docs/design.md, "One library, three CPU builds").
inline namespace CPU_CAPABILITY {
namespace simd_math {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kMinArg = -87.3365447504f;  // log(FLT_MIN)
constexpr float kMaxArg = 88.0f;  // AVX2: 2^n built from exponent bits stays finite
constexpr float kInf = std::numeric_limits<float>::infinity();
// exp(r) ~ sum_i kExpCoeffs[5 - i] r^i, highest degree first.
constexpr float kExpCoeffs[] = {
    8.2903150469e-03f, 4.1897930205e-02f, 1.6667635739e-01f, 4.9999150634e-01f,
    9.9999970198e-01f, 1.0f};
// (log1p(t) - t + t^2 / 2) / t^3 ~ sum_i kLog1pCoeffs[8 - i] t^i on
// [-0.25, 0.5], highest degree first.
constexpr float kLog1pCoeffs[] = {
    4.2871978037e-02f, -9.5613400136e-02f, 1.1680681791e-01f,
    -1.2639311138e-01f, 1.4268305970e-01f, -1.6660817531e-01f,
    2.0000140896e-01f, -2.5000056714e-01f, 3.3333333147e-01f};

// float64 exp: the same reduction with Cephes' double two-part ln2 (kLn2Hi
// has enough trailing zero bits that n kLn2Hi is exact for |n| < 2^11), and
// the Taylor polynomial of degree 13 (truncation below 0.05 ulp for |r| <=
// ln2 / 2). Results below DBL_MIN are flushed to 0 as in float. Its error
// against long double expl: benchmarks/cpp/simd_math_accuracy.cpp measures
// it, benchmarks/README.md ("Inline SIMD exp and log: accuracy") records it.
constexpr double kLog2eDouble = 1.4426950408889634074;
constexpr double kLn2HiDouble = 6.93145751953125e-1;
constexpr double kLn2LoDouble = 1.42860682030941723212e-6;
constexpr double kMinArgDouble = -708.39641853226410622;  // log(DBL_MIN)
constexpr double kMaxArgDouble = 709.0;  // AVX2: 2^n from exponent bits stays finite
// 1 / k!, k = 13 down to 0.
constexpr double kExpCoeffsDouble[] = {
    1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
    1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,      1.0 / 720.0,
    1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,         0.5,
    1.0,                1.0};

// The arithmetic both vector widths share, written once over these overloads
// (not at::vec::Vectorized, which has them: this header stays free of torch so
// that benchmarks/cpp/simd_math_accuracy.cpp checks both widths in one program).
template <typename V, typename T>
V splat(T value);

#if defined(CPU_CAPABILITY_AVX512)
template <>
inline __m512 splat<__m512, float>(float value) {
  return _mm512_set1_ps(value);
}
inline __m512 fmadd(__m512 a, __m512 b, __m512 c) {
  return _mm512_fmadd_ps(a, b, c);
}
inline __m512 fnmadd(__m512 a, __m512 b, __m512 c) {
  return _mm512_fnmadd_ps(a, b, c);
}
inline __m512 mul(__m512 a, __m512 b) {
  return _mm512_mul_ps(a, b);
}
inline __m512 sub(__m512 a, __m512 b) {
  return _mm512_sub_ps(a, b);
}
template <>
inline __m512d splat<__m512d, double>(double value) {
  return _mm512_set1_pd(value);
}
inline __m512d fmadd(__m512d a, __m512d b, __m512d c) {
  return _mm512_fmadd_pd(a, b, c);
}
inline __m512d fnmadd(__m512d a, __m512d b, __m512d c) {
  return _mm512_fnmadd_pd(a, b, c);
}
#endif

#if defined(CPU_CAPABILITY_AVX2)
template <>
inline __m256 splat<__m256, float>(float value) {
  return _mm256_set1_ps(value);
}
inline __m256 fmadd(__m256 a, __m256 b, __m256 c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline __m256 fnmadd(__m256 a, __m256 b, __m256 c) {
  return _mm256_fnmadd_ps(a, b, c);
}
inline __m256 mul(__m256 a, __m256 b) {
  return _mm256_mul_ps(a, b);
}
inline __m256 sub(__m256 a, __m256 b) {
  return _mm256_sub_ps(a, b);
}
template <>
inline __m256d splat<__m256d, double>(double value) {
  return _mm256_set1_pd(value);
}
inline __m256d fmadd(__m256d a, __m256d b, __m256d c) {
  return _mm256_fmadd_pd(a, b, c);
}
inline __m256d fnmadd(__m256d a, __m256d b, __m256d c) {
  return _mm256_fnmadd_pd(a, b, c);
}
#endif

// sum_i coeffs[N - 1 - i] x^i. A fold rather than a loop: with a loop, even
// one unrolled by pragma, GCC compiled the AVX2 kernels worse, and they were
// slower (benchmarks/README.md, "Inline SIMD exp and log: speed").
template <typename V, typename T, int N, std::size_t... I>
inline V horner(const T (&coeffs)[N], V x, std::index_sequence<I...>) {
  V p = splat<V>(coeffs[0]);
  ((p = fmadd(p, x, splat<V>(coeffs[I + 1]))), ...);
  return p;
}

template <typename V, typename T, int N>
inline V horner(const T (&coeffs)[N], V x) {
  return horner(coeffs, x, std::make_index_sequence<N - 1>{});
}

// exp(r) for r = x - n ln2 (two-part ln2), |r| <= ln2 / 2.
template <typename V>
inline V exp_of_remainder(V x, V n) {
  V r = fnmadd(n, splat<V>(kLn2Hi), x);
  r = fnmadd(n, splat<V>(kLn2Lo), r);
  return horner(kExpCoeffs, r);
}

template <typename V>
inline V exp_of_remainder_double(V x, V n) {
  V r = fnmadd(n, splat<V>(kLn2HiDouble), x);
  r = fnmadd(n, splat<V>(kLn2LoDouble), r);
  return horner(kExpCoeffsDouble, r);
}

// e ln2 + log(m) for m in [0.75, 1.5).
template <typename V>
inline V log_of_mantissa_exponent(V m, V e) {
  const V t = sub(m, splat<V>(1.0f));
  const V t2 = mul(t, t);
  const V log1p =
      fmadd(mul(t2, t), horner(kLog1pCoeffs, t), fnmadd(t2, splat<V>(0.5f), t));
  return fmadd(e, splat<V>(kLn2Hi), fmadd(e, splat<V>(kLn2Lo), log1p));
}

#if defined(CPU_CAPABILITY_AVX512)
inline __m512 exp_ps(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMinArg), _CMP_LT_OQ);
  // max returns its second operand when either is NaN: NaN stays NaN. No
  // upper clamp: scalef overflows to inf past 88.7 by itself.
  x = _mm512_max_ps(_mm512_set1_ps(kMinArg), x);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_maskz_scalef_ps(
      static_cast<__mmask16>(~underflow), exp_of_remainder(x, n), n);
}

inline __m512d exp_pd(__m512d x) {
  const __mmask8 underflow =
      _mm512_cmp_pd_mask(x, _mm512_set1_pd(kMinArgDouble), _CMP_LT_OQ);
  x = _mm512_max_pd(_mm512_set1_pd(kMinArgDouble), x);
  const __m512d n = _mm512_roundscale_pd(
      _mm512_mul_pd(x, _mm512_set1_pd(kLog2eDouble)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_maskz_scalef_pd(
      static_cast<__mmask8>(~underflow), exp_of_remainder_double(x, n), n);
}

inline __m512 log_ps(__m512 x) {
  // getmant picks m in [0.75, 1.5) (NaN for x < 0); e is getexp(x) =
  // floor(log2 x), or one more where m was halved into [0.75, 1).
  const __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_nan);
  __m512 e = _mm512_getexp_ps(x);
  e = _mm512_mask_add_ps(
      e, _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.0f), _CMP_LT_OQ), e, _mm512_set1_ps(1.0f));
  const __m512 result = log_of_mantissa_exponent(m, e);
  // e = -inf (x = 0) or +inf (x = +inf) meets the two halves of ln2 with
  // opposite signs: inf - inf.
  const __mmask16 zero = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_OQ);
  const __mmask16 inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kInf), _CMP_EQ_OQ);
  return _mm512_mask_mov_ps(
      _mm512_mask_mov_ps(result, zero, _mm512_set1_ps(-kInf)), inf, _mm512_set1_ps(kInf));
}
#endif

#if defined(CPU_CAPABILITY_AVX2)
inline __m256 exp_ps(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(kMinArg), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(kMaxArg), x);
  // Lanes that underflow compute exp(0), zeroed at the end: clamped to
  // kMinArg instead, the product below could be subnormal, which costs a
  // microcode assist per vector (benchmarks/README.md, "Inline SIMD exp and
  // log: speed"). NaN is not below kMinArg and stays NaN.
  x = _mm256_andnot_ps(underflow, x);
  const __m256 n = _mm256_round_ps(
      _mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 p = exp_of_remainder(x, n);
  const __m256i biased_exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(biased_exponent, 23));
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, scale));
}

inline __m256d exp_pd(__m256d x) {
  const __m256d underflow = _mm256_cmp_pd(x, _mm256_set1_pd(kMinArgDouble), _CMP_LT_OQ);
  x = _mm256_min_pd(_mm256_set1_pd(kMaxArgDouble), x);
  // As in exp_ps: underflowing lanes compute exp(0), then are zeroed.
  x = _mm256_andnot_pd(underflow, x);
  const __m256d n = _mm256_round_pd(
      _mm256_mul_pd(x, _mm256_set1_pd(kLog2eDouble)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256d p = exp_of_remainder_double(x, n);
  const __m256i biased_exponent = _mm256_add_epi64(
      _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023));
  const __m256d scale = _mm256_castsi256_pd(_mm256_slli_epi64(biased_exponent, 52));
  return _mm256_andnot_pd(underflow, _mm256_mul_pd(p, scale));
}

inline __m256 log_ps(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
  // m in [1, 2); move [1.5, 2) to [0.75, 1) so that t = m - 1 is in [-0.25, 0.5).
  const __m256 halve = _mm256_cmp_ps(m, _mm256_set1_ps(1.5f), _CMP_GE_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), halve);
  e = _mm256_add_ps(e, _mm256_and_ps(halve, _mm256_set1_ps(1.0f)));
  __m256 result = log_of_mantissa_exponent(m, e);
  // The exponent bits say nothing useful for 0, +inf, NaN and x < 0.
  result = _mm256_blendv_ps(
      result, _mm256_set1_ps(-kInf), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ));
  result = _mm256_blendv_ps(result, x, _mm256_cmp_ps(x, _mm256_set1_ps(kInf), _CMP_EQ_OQ));
  // x < 0 or NaN (not >= 0, unordered): all bits set, a NaN.
  return _mm256_or_ps(result, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ));
}
#endif

} // namespace simd_math
} // namespace CPU_CAPABILITY
} // namespace cpu
} // namespace hee

// Accuracy of the inline SIMD exp and log (csrc/cpu/simd_math.h) against
// double-precision libm, in ulp of the float result, on every `stride`-th
// float of the ranges the kernels use (exp: shifted logits and
// log-probabilities in [-87.3, 0]; log: row sums in [1, 2^20]) and of a wide
// log range, plus edge values; and the float64 exp against long double expl,
// in ulp of the double result, on 2^24 evenly spread doubles of
// [log(DBL_MIN), 0]. Built and run by benchmarks/cpp/run.sh (stride 3); the
// results are recorded in benchmarks/README.md, "Inline SIMD exp and log:
// accuracy".
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

// run.sh builds this with AVX-512 flags only where the CPU has AVX-512. Both
// widths in one program: one per-ISA namespace for both (cpu/simd_math.h).
#if defined(__AVX512F__)
#define CPU_CAPABILITY_AVX512
#endif
#define CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY accuracy_check
#include "cpu/simd_math.h"

namespace {

constexpr float kFltMin = 1.17549435e-38f;

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

// Errors in ulp: their max (and where), mean and count, printed as a table row.
struct UlpStats {
  double max_ulp = 0.0, sum_ulp = 0.0, worst = 0.0;
  int64_t count = 0;
  void add(double err, double x) {
    sum_ulp += err;
    ++count;
    if (err > max_ulp) {
      max_ulp = err;
      worst = x;
    }
  }
  void print(const char* name, double a, double b) const {
    std::printf("| %s | [%g, %g] | %.3f (at %.17g) | %.4f | %lld |\n", name, a, b, max_ulp, worst,
                sum_ulp / count, static_cast<long long>(count));
  }
};

// Every stride-th float between a and b (same sign), W at a time.
template <int W, typename Lanes, typename Exact>
void report(const char* name, Lanes lanes, Exact exact_fn, float a, float b, uint32_t stride) {
  const uint32_t first = std::min(bits_of(a), bits_of(b));
  const uint32_t last = std::max(bits_of(a), bits_of(b));
  UlpStats stats;
  alignas(64) float x[W], y[W];
  for (uint64_t bits = first; bits <= last; bits += uint64_t{W} * stride) {
    for (int i = 0; i < W; ++i) {
      const uint32_t lane_bits = static_cast<uint32_t>(std::min<uint64_t>(bits + uint64_t(i) * stride, last));
      std::memcpy(&x[i], &lane_bits, sizeof(lane_bits));
    }
    lanes(x, y);
    for (int i = 0; i < W; ++i) {
      const double exact = exact_fn(static_cast<double>(x[i]));
      const float rounded = static_cast<float>(exact);
      if (std::fabs(rounded) < kFltMin) {
        continue;  // exp: flushed to 0 by design; log: log(1) = 0 is checked below
      }
      const double ulp = std::ldexp(1.0, std::ilogb(rounded) - 23);
      stats.add(std::fabs(static_cast<double>(y[i]) - exact) / ulp, x[i]);
    }
  }
  stats.print(name, a, b);
}

template <int W, typename Lanes>
void report_log_edges(const char* isa, Lanes lanes) {
  static_assert(W == 8 || W == 16);
  alignas(64) float x[16] = {1.0f, 0.0f, -0.0f, -1.0f, INFINITY, -INFINITY, NAN, 1e-30f,
                             3.0f, 64.0f, 1.5f, 0.75f, 1.0000001f, 0.99999994f, 3e38f, 2.0f};
  alignas(64) float y[16];
  for (int i = 0; i < 16; i += W) {
    lanes(x + i, y + i);
  }
  std::printf("\nlog edge values (%s): x -> log_ps(x) [double log]\n", isa);
  for (int i = 0; i < 16; ++i) {
    std::printf("  %g -> %.9g [%.9g]\n", x[i], y[i], std::log(static_cast<double>(x[i])));
  }
}

// exp_pd on n doubles evenly spread over [a, b], W at a time, against expl.
template <int W, typename Lanes>
void report_exp_double(const char* name, Lanes lanes, double a, double b, int64_t n) {
  UlpStats stats;
  alignas(64) double x[W], y[W];
  for (int64_t i = 0; i < n; i += W) {
    for (int j = 0; j < W; ++j) {
      x[j] = a + (b - a) * static_cast<double>(std::min(i + j, n - 1)) / static_cast<double>(n - 1);
    }
    lanes(x, y);
    for (int j = 0; j < W; ++j) {
      const long double exact = std::exp(static_cast<long double>(x[j]));
      const double rounded = static_cast<double>(exact);
      if (std::fabs(rounded) < std::numeric_limits<double>::min()) {
        continue;  // flushed to 0 by design
      }
      const long double ulp = std::ldexp(1.0L, std::ilogb(rounded) - 52);
      stats.add(static_cast<double>(std::fabs(static_cast<long double>(y[j]) - exact) / ulp), x[j]);
    }
  }
  stats.print(name, a, b);
}

template <int W, typename Lanes>
void report_exp_double_edges(const char* isa, Lanes lanes) {
  static_assert(W == 4 || W == 8);
  alignas(64) double x[16] = {0.0, -0.0, -1e-300, -50.0, -708.39, -708.4, -745.2, -1.7e308,
                              -INFINITY, NAN, 1.0, 700.0, -1e4, -20.0, -1.0, 2.0};
  alignas(64) double y[16];
  for (int i = 0; i < 16; i += W) {
    lanes(x + i, y + i);
  }
  std::printf("\nexp edge values (%s, float64): x -> exp_pd(x) [long double exp]\n", isa);
  for (int i = 0; i < 16; ++i) {
    std::printf("  %g -> %.17g [%.17Lg]\n", x[i], y[i], std::exp(static_cast<long double>(x[i])));
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hee::cpu::simd_math;
  const uint32_t stride = argc > 1 ? static_cast<uint32_t>(std::atoi(argv[1])) : 3;
  const auto exact_exp = [](double x) { return std::exp(x); };
  const auto exact_log = [](double x) { return std::log(x); };
  std::printf("| function | range | max ulp | mean ulp | floats checked |\n|---|---|---|---|---|\n");
  const auto exp8 = [](const float* x, float* y) { _mm256_store_ps(y, exp_ps(_mm256_load_ps(x))); };
  const auto log8 = [](const float* x, float* y) { _mm256_store_ps(y, log_ps(_mm256_load_ps(x))); };
  report<8>("avx2 exp", exp8, exact_exp, -87.3f, -0.0f, stride);
  report<8>("avx2 log", log8, exact_log, 1.0f, 1048576.0f, stride);
  report<8>("avx2 log", log8, exact_log, kFltMin, 3.4e38f, stride * 16);
#if defined(__AVX512F__)
  const auto exp16 = [](const float* x, float* y) { _mm512_store_ps(y, exp_ps(_mm512_load_ps(x))); };
  const auto log16 = [](const float* x, float* y) { _mm512_store_ps(y, log_ps(_mm512_load_ps(x))); };
  report<16>("avx512 exp", exp16, exact_exp, -87.3f, -0.0f, stride);
  report<16>("avx512 log", log16, exact_log, 1.0f, 1048576.0f, stride);
  report<16>("avx512 log", log16, exact_log, kFltMin, 3.4e38f, stride * 16);
  report<16>("avx512 log, subnormal x", log16, exact_log, 1e-45f, 1.1e-38f, stride);
#endif
  const double min_arg = std::log(std::numeric_limits<double>::min());
  const auto exp4d = [](const double* x, double* y) { _mm256_store_pd(y, exp_pd(_mm256_load_pd(x))); };
  report_exp_double<4>("avx2 exp, float64", exp4d, min_arg, 0.0, int64_t{1} << 24);
#if defined(__AVX512F__)
  const auto exp8d = [](const double* x, double* y) { _mm512_store_pd(y, exp_pd(_mm512_load_pd(x))); };
  report_exp_double<8>("avx512 exp, float64", exp8d, min_arg, 0.0, int64_t{1} << 24);
  report_exp_double<8>("avx512 exp, float64", exp8d, -1.0, 0.0, int64_t{1} << 24);
#endif
  report_log_edges<8>("avx2", log8);
  report_exp_double_edges<4>("avx2", exp4d);
#if defined(__AVX512F__)
  report_exp_double_edges<8>("avx512", exp8d);
  report_log_edges<16>("avx512", log16);
  alignas(64) float x[16] = {0.0f, -0.0f, -1e-30f, -50.0f, -87.33f, -87.34f, -100.0f, -3.4e38f,
                             -INFINITY, NAN, 1.0f, 88.7f, 88.73f, 1e30f, INFINITY, 2.0f};
  alignas(64) float y[16];
  exp16(x, y);
  std::printf("\nexp edge values (avx512): x -> exp_ps(x) [double exp]\n");
  for (int i = 0; i < 16; ++i) {
    std::printf("  %g -> %g [%g]\n", x[i], y[i], std::exp(static_cast<double>(x[i])));
  }
#endif
  return 0;
}

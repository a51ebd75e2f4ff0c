// Accuracy of the inline SIMD exp (csrc/cpu/simd_exp.h) against double exp,
// in ulp of the float result, on every `stride`-th float in [-87.3, 0] (the
// range the kernels use: shifted logits and log-probabilities), plus edge
// values. Built and run by benchmarks/cpp/run.sh; the figures quoted in
// simd_exp.h come from it with stride 3.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// run.sh builds this with AVX-512 flags only where the CPU has AVX-512.
#if defined(__AVX512F__)
#define CPU_CAPABILITY_AVX512
#endif
#define CPU_CAPABILITY_AVX2
#include "cpu/simd_exp.h"

namespace {

constexpr float kFltMin = 1.17549435e-38f;

template <int W, typename Exp>
void report(const char* isa, Exp exp_lanes, uint32_t stride) {
  const float lo = -87.3f;
  uint32_t first_bits = 0x80000000u;  // -0.0; negative floats grow in magnitude with their bits
  uint32_t last_bits;
  std::memcpy(&last_bits, &lo, sizeof(lo));
  double max_ulp = 0.0, sum_ulp = 0.0;
  float worst = 0.0f;
  int64_t count = 0;
  alignas(64) float x[W], y[W];
  for (uint64_t bits = first_bits; bits <= last_bits; bits += uint64_t{W} * stride) {
    for (int i = 0; i < W; ++i) {
      const uint32_t b = static_cast<uint32_t>(std::min<uint64_t>(bits + uint64_t(i) * stride, last_bits));
      std::memcpy(&x[i], &b, sizeof(b));
    }
    exp_lanes(x, y);
    for (int i = 0; i < W; ++i) {
      const double exact = std::exp(static_cast<double>(x[i]));
      if (static_cast<float>(exact) < kFltMin) {
        continue;  // flushed to 0 by design
      }
      const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(exact)) - 23);
      const double err = std::fabs(static_cast<double>(y[i]) - exact) / ulp;
      sum_ulp += err;
      ++count;
      if (err > max_ulp) {
        max_ulp = err;
        worst = x[i];
      }
    }
  }
  std::printf("| %s | %.3f (at %.9g) | %.4f | %lld |\n", isa, max_ulp, worst, sum_ulp / count,
              static_cast<long long>(count));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hee::cpu::simd_exp;
  const uint32_t stride = argc > 1 ? static_cast<uint32_t>(std::atoi(argv[1])) : 3;
  std::printf("| isa | max ulp | mean ulp | floats checked |\n|---|---|---|---|\n");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    report<8>("avx2", [](const float* x, float* y) { _mm256_store_ps(y, exp_ps(_mm256_load_ps(x))); }, stride);
  }
#if defined(__AVX512F__)
  {
    report<16>("avx512", [](const float* x, float* y) { _mm512_store_ps(y, exp_ps(_mm512_load_ps(x))); }, stride);
    alignas(64) float x[16] = {0.0f, -0.0f, -1e-30f, -50.0f, -87.33f, -87.34f, -100.0f, -3.4e38f,
                               -INFINITY, NAN, 1.0f, 88.7f, 88.73f, 1e30f, INFINITY, 2.0f};
    alignas(64) float y[16];
    _mm512_store_ps(y, exp_ps(_mm512_load_ps(x)));
    std::printf("\nedge values (avx512): x -> exp_ps(x) [double exp]\n");
    for (int i = 0; i < 16; ++i) {
      std::printf("  %g -> %g [%g]\n", x[i], y[i], std::exp(static_cast<double>(x[i])));
    }
  }
#endif
  return 0;
}

// Single-thread speed of the CPU row kernels, in ns per logit, per ISA build:
// the kernels called directly on [2^20 / K, K] float32 logits, no op, no
// autograd, no threads. Best of 40 runs, so that a busy machine matters less.
// Built and run by benchmarks/cpp/run.sh; `row_kernels_bench K...` times the
// given row widths instead of the default ones.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/row_kernels.h"

using namespace hee::cpu;

namespace {

template <class F>
double best_seconds(const F& run) {
  run();
  double best = 1e9;
  for (int i = 0; i < 40; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    best = std::min(
        best,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

template <typename Forward, typename Backward>
void report(const char* isa, int64_t K, Forward forward, Backward backward) {
  const int64_t B = (int64_t{1} << 20) / K;
  std::mt19937 generator(0);
  std::normal_distribution<float> normal;
  std::vector<float> logits(B * K);
  for (float& v : logits) {
    v = normal(generator);
  }
  std::vector<float> stats_buffer(3 * B);
  std::vector<float> grad(B * K);
  const RowStats<float> stats{
      stats_buffer.data(), stats_buffer.data() + B, stats_buffer.data() + 2 * B};
  const LogitRows<float> rows{logits.data(), K, K};
  const double elements = static_cast<double>(B * K);
  const double fwd = best_seconds([&] { forward(rows, 0, B, stats, TakenLogProbs<float>{}); });
  const double bwd =
      best_seconds([&] { backward(rows, 0, B, stats, 0.1f, grad.data(), K, nullptr); });
  std::printf(
      "| %s | %ld | %.2f | %.2f |\n", isa, static_cast<long>(K), fwd * 1e9 / elements,
      bwd * 1e9 / elements);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> row_widths = {2, 4, 8, 16, 32, 64, 256};
  if (argc > 1) {
    row_widths.clear();
    for (int i = 1; i < argc; ++i) {
      row_widths.push_back(std::atol(argv[i]));
    }
  }
  std::printf("| isa | K | forward ns/logit | backward ns/logit |\n|---|---|---|---|\n");
  for (int64_t K : row_widths) {
    report("generic", K, generic::forward_rows<float>, generic::backward_rows<float>);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      report("avx2", K, avx2::forward_rows<float>, avx2::backward_rows<float>);
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      report("avx512", K, avx512::forward_rows<float>, avx512::backward_rows<float>);
    }
  }
  return 0;
}

// The small-size floor from C++: forward+backward of the fused op against
// logits.sum() + log_std.sum() and its backward, on the same [B, 4] logits and
// [B, 8] log_std, one thread, no Python. Best of 7 runs of 20,000 calls.
// usage: op_call_bench <op_library.so>   (built and run by benchmarks/cpp/run.sh)
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace {

using Outputs = std::tuple<
    at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
    at::Tensor, at::Tensor>;

template <class F>
double best_microseconds_per_call(const F& call) {
  constexpr int kCalls = 20000;
  for (int i = 0; i < 1000; ++i) {
    call();
  }
  double best = 1e9;
  for (int run = 0; run < 7; ++run) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) {
      call();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, seconds / kCalls * 1e6);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "usage: op_call_bench <op_library.so>\n");
    return 2;
  }
  at::set_num_threads(1);
  const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("hybrid_entropy_ext::hybrid_entropy_loss", "")
          .typed<Outputs(
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              const at::Tensor&, double, double, std::optional<double>,
              std::optional<double>, double)>();
  const at::Tensor coeff = torch::scalar_tensor(0.1, torch::kDouble);
  std::printf("| B x K | fused fwd+bwd (us) | sum fwd+bwd (us) | ratio |\n|---|---|---|---|\n");
  for (int64_t batch : {1, 256}) {
    const at::Tensor logits = torch::randn({batch, 4}).requires_grad_();
    const at::Tensor log_std = torch::randn({batch, 8}).requires_grad_();
    const double fused = best_microseconds_per_call([&] {
      const Outputs out = op.call(logits, log_std, coeff, 1.0, 0.5, 0.1, 0.1, 3.0);
      torch::autograd::grad({std::get<0>(out)}, {logits, log_std});
    });
    const double sum = best_microseconds_per_call([&] {
      torch::autograd::grad({logits.sum() + log_std.sum()}, {logits, log_std});
    });
    std::printf(
        "| %ldx4 | %.1f | %.1f | %.2fx |\n", static_cast<long>(batch), fused, sum,
        fused / sum);
  }
  return 0;
}

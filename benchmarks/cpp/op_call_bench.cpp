// The small-size floor from C++: forward+backward of the fused op against
// logits.sum() + log_std.sum() and its backward, on the same [B, 4] logits and
// [B, 8] log_std, one thread, no Python. Best of 7 runs of 5,000 calls each,
// the two alternating run by run so that a slower spell of the machine hits
// both.
// usage: op_call_bench <op_library.so>   (built and run by benchmarks/cpp/run.sh)
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace {

// The op's first output (the total), called with `leading` as its first
// arguments and the schema's defaults for the rest. Boxed, as Python's
// torch.ops calls are, so that the call follows the schema as it gains
// arguments.
at::Tensor call_with_defaults(
    const c10::OperatorHandle& op, std::initializer_list<c10::IValue> leading) {
  torch::jit::Stack stack(leading);
  const auto& arguments = op.schema().arguments();
  for (std::size_t i = stack.size(); i < arguments.size(); ++i) {
    stack.push_back(arguments[i].default_value().value());
  }
  op.callBoxed(&stack);
  return stack.front().toTensor();
}

// Best microseconds per call of each of two calls, timed in alternating runs.
template <class F, class G>
std::pair<double, double> best_microseconds_per_call(const F& first, const G& second) {
  constexpr int kCalls = 5000;
  for (int i = 0; i < 1000; ++i) {
    first();
    second();
  }
  const auto time_run = [](const auto& call) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) {
      call();
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
        kCalls * 1e6;
  };
  double best_first = 1e9;
  double best_second = 1e9;
  for (int run = 0; run < 7; ++run) {
    best_first = std::min(best_first, time_run(first));
    best_second = std::min(best_second, time_run(second));
  }
  return {best_first, best_second};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "usage: op_call_bench <op_library.so>\n");
    return 2;
  }
  at::set_num_threads(1);
  const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow(
          "hybrid_entropy_ext::hybrid_entropy_loss", "");
  const at::Tensor coeff = torch::scalar_tensor(0.1, torch::kDouble);
  std::printf("| B x K | fused fwd+bwd (us) | sum fwd+bwd (us) | ratio |\n|---|---|---|---|\n");
  for (int64_t batch : {1, 256}) {
    const at::Tensor logits = torch::randn({batch, 4}).requires_grad_();
    const at::Tensor log_std = torch::randn({batch, 8}).requires_grad_();
    const auto [fused, sum] = best_microseconds_per_call(
        [&] {
          const at::Tensor total = call_with_defaults(op, {logits, log_std, coeff});
          torch::autograd::grad({total}, {logits, log_std});
        },
        [&] { torch::autograd::grad({logits.sum() + log_std.sum()}, {logits, log_std}); });
    std::printf(
        "| %ldx4 | %.1f | %.1f | %.2fx |\n", static_cast<long>(batch), fused, sum,
        fused / sum);
  }
  return 0;
}

// The CUDA forward and backward of csrc/cuda/, registered as the ops of a
// test-only namespace, hee_cuda_emulation, over CPU tensors: the same
// schemas (from csrc/op_arguments.h), the same ATen glue (cuda/loss_calls.h),
// launch plan and kernel source as on a GPU, with every launch run on the
// host through cuda_emulation.h. tests/test_cuda_emulated.py builds it with
// torch.utils.cpp_extension and calls the ops as it calls the real ones.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <torch/library.h>

#include <mutex>
#include <vector>

#include "loss_plan.h"
#include "op_signatures.h"

#include "cuda_emulation.h"

#include "cuda/loss_calls.h"
#include "cuda/token_terms_calls.h"

namespace hee {
namespace cuda {
namespace {

// What the tests choose about the emulated GPU and its allocations.
struct EmulationOptions {
  int multiprocessors = 132;
  int threads_per_multiprocessor = 2048;
  // A 0-dim coefficient is read on the host (as a CPU coefficient on a GPU)
  // rather than by the kernels.
  bool coefficient_on_host = false;
  // Outputs of two or more elements start this many elements past an
  // aligned allocation (to test misaligned gradients).
  int64_t output_offset_elements = 0;
};

// What the last forward or backward did.
struct EmulationRecord {
  ForwardLaunchPlan forward_plan{};
  TokenForwardLaunch token_forward{};
  int64_t launches = 0;
};

std::mutex options_mutex;
EmulationOptions options;
EmulationRecord last_record;

struct EmulatedDevice {
  EmulationOptions options;
  int64_t* launches;

  at::Tensor empty(const TensorSpec& spec) const {
    const c10::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(spec.sizes);
    const c10::IntArrayRef strides = C10_AS_INTARRAYREF_SLOW(spec.strides);
    int64_t extent = 1;
    for (size_t d = 0; d < sizes.size(); ++d) {
      extent += (sizes[d] - 1) * strides[d];
    }
    if (options.output_offset_elements == 0 || extent < 2) {
      return at::empty_strided(sizes, strides, at::dtype(spec.dtype));
    }
    return at::empty({extent + options.output_offset_elements}, at::dtype(spec.dtype))
        .as_strided(sizes, strides, options.output_offset_elements);
  }

  at::Tensor empty_workspace(int64_t count, at::ScalarType dtype) const {
    return at::empty({count}, at::dtype(dtype));
  }

  bool reads_coefficient_on_host(const at::Tensor& entropy_coeff) const {
    return options.coefficient_on_host && entropy_coeff.dim() == 0;
  }

  DeviceShape shape() const {
    return {options.multiprocessors, options.threads_per_multiprocessor};
  }

  template <typename Args>
  void operator()(
      void (*kernel)(Args),
      int64_t grid_blocks,
      int block_threads,
      const Args& args) const {
    ++*launches;
    cuda_emulation::launch(kernel, grid_blocks, block_threads, args);
  }
};

LossForwardOutputs emulated_forward(const LossForwardArgs& args) {
  std::lock_guard<std::mutex> lock(options_mutex);
  EmulationRecord record;
  LossForwardOutputs outputs = forward_on(
      EmulatedDevice{options, &record.launches}, args, &record.forward_plan);
  last_record = record;
  return outputs;
}

LossBackwardOutputs emulated_backward(const LossBackwardArgs& args) {
  std::lock_guard<std::mutex> lock(options_mutex);
  EmulationRecord record;
  LossBackwardOutputs grads =
      backward_on(EmulatedDevice{options, &record.launches}, args);
  last_record = record;
  return grads;
}

TokenTermsOutputs emulated_token_terms(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  std::lock_guard<std::mutex> lock(options_mutex);
  EmulationRecord record;
  TokenTermsOutputs outputs = token_terms_forward_on(
      EmulatedDevice{options, &record.launches}, logits, actions, mask,
      temperature, action_mask, discrete_sizes, &record.token_forward);
  last_record = record;
  return outputs;
}

at::Tensor emulated_token_terms_backward(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  std::lock_guard<std::mutex> lock(options_mutex);
  EmulationRecord record;
  at::Tensor grad_logits = token_terms_backward_on(
      EmulatedDevice{options, &record.launches}, grad_log_prob, grad_entropy,
      logits, actions, mask, row_stats, temperature, action_mask,
      discrete_sizes);
  last_record = record;
  return grad_logits;
}

// The last log_prob_and_entropy forward's launch (its last sub-head's, with
// discrete_sizes): layout (0 rows in warps, 1 a row per block), log2 of the
// padded columns, vector width, threads per block, grid.
std::vector<int64_t> last_token_forward() {
  std::lock_guard<std::mutex> lock(options_mutex);
  const TokenForwardLaunch& launch = last_record.token_forward;
  return {launch.layout == RowLayout::kRowInBlock ? 1 : 0, launch.log2_cols,
          launch.vec, launch.block_threads, launch.grid};
}

void configure(
    int64_t multiprocessors,
    int64_t threads_per_multiprocessor,
    bool coefficient_on_host,
    int64_t output_offset_elements) {
  std::lock_guard<std::mutex> lock(options_mutex);
  options.multiprocessors = static_cast<int>(multiprocessors);
  options.threads_per_multiprocessor = static_cast<int>(threads_per_multiprocessor);
  options.coefficient_on_host = coefficient_on_host;
  options.output_offset_elements = output_offset_elements;
}

// layout (0 rows in warps, 1 a row per block), log2 of the padded columns,
// threads per block, vector width, column splits, launches.
std::vector<int64_t> last_forward() {
  std::lock_guard<std::mutex> lock(options_mutex);
  const ForwardLaunchPlan& plan = last_record.forward_plan;
  return {plan.layout == RowLayout::kRowInBlock ? 1 : 0, plan.log2_cols,
          plan.block_threads, plan.vec, plan.splits, last_record.launches};
}

int64_t last_launches() {
  std::lock_guard<std::mutex> lock(options_mutex);
  return last_record.launches;
}

// The forward's launch plan alone, for shapes too large to run: layout,
// logit blocks, log_std blocks, column splits.
std::vector<int64_t> plan_forward(
    int64_t batch,
    int64_t num_cols,
    int64_t log_std_count,
    int64_t multiprocessors,
    int64_t threads_per_multiprocessor) {
  ForwardProblem p;
  p.has_discrete = num_cols > 0;
  p.logits_dtype = DType::kFloat;
  p.batch = batch;
  p.num_cols = num_cols;
  p.row_stride = num_cols;
  p.has_continuous = log_std_count > 0;
  p.log_std_rows = 1;
  p.log_std_dims = log_std_count;
  const ForwardLaunchPlan plan = plan_forward_launch(
      p,
      DeviceShape{static_cast<int>(multiprocessors),
                  static_cast<int>(threads_per_multiprocessor)});
  return {plan.layout == RowLayout::kRowInBlock ? 1 : 0, plan.num_logit_blocks,
          plan.num_log_std_blocks, plan.splits};
}

// dividends (int64 holding values below 2^32) / divisor by the backward's
// FastDivider.
at::Tensor fast_divide(const at::Tensor& dividends, int64_t divisor) {
  const FastDivider d = FastDivider::of(static_cast<uint32_t>(divisor));
  const at::Tensor in = dividends.contiguous();
  at::Tensor quotients = at::empty_like(in);
  const int64_t* src = in.const_data_ptr<int64_t>();
  int64_t* dst = quotients.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < in.numel(); ++i) {
    dst[i] = d.divide(static_cast<uint32_t>(src[i]));
  }
  return quotients;
}

} // namespace

TORCH_LIBRARY(hee_cuda_emulation, m) {
  m.def(loss_forward_schema("hybrid_entropy_loss").c_str());
  m.def(loss_backward_schema("_hybrid_entropy_loss_backward").c_str());
  m.def(kTokenTermsForwardSchema);
  m.def(kTokenTermsBackwardSchema);
  m.def("last_token_forward() -> int[]", &last_token_forward);
  m.def(
      "configure(int multiprocessors, int threads_per_multiprocessor, "
      "bool coefficient_on_host, int output_offset_elements) -> ()",
      &configure);
  m.def("last_forward() -> int[]", &last_forward);
  m.def("last_launches() -> int", &last_launches);
  m.def(
      "plan_forward(int batch, int num_cols, int log_std_count, "
      "int multiprocessors, int threads_per_multiprocessor) -> int[]",
      &plan_forward);
  m.def("fast_divide(Tensor dividends, int divisor) -> Tensor", &fast_divide);
}

TORCH_LIBRARY_IMPL(hee_cuda_emulation, CPU, m) {
  m.impl("hybrid_entropy_loss", forward_kernel<&emulated_forward>);
  m.impl("_hybrid_entropy_loss_backward", backward_kernel<&emulated_backward>);
  m.impl("log_prob_and_entropy", &emulated_token_terms);
  m.impl("_log_prob_and_entropy_backward", &emulated_token_terms_backward);
}

} // namespace cuda
} // namespace hee

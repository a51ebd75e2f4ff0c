// The CUDA forward and backward of csrc/cuda/, run on the host through
// cuda_emulation.h: the same launch plan and kernel source as on a GPU, over
// host buffers. A C interface for tests/test_cuda_emulated.py (ctypes).
#include "cuda_emulation.h"

#include "cuda/launch_plan.h"

#include "../cpp/loss_params_array.h"

using namespace hee;
using namespace hee::cuda;

namespace {

// Runs each launch on the host and counts them.
struct CountingEmulatedLaunch {
  int64_t* launches;

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

// coeff: nullptr for host values (0-dim CPU coefficient), else device-like
// values of dtype coeff_dtype, [2] when per_head.
Coefficients coefficients_of(
    const void* values,
    int dtype,
    int per_head,
    int64_t stride,
    double host_discrete,
    double host_continuous) {
  Coefficients c;
  c.values = values;
  c.dtype = static_cast<DType>(dtype);
  c.per_head = per_head != 0;
  c.stride = stride;
  c.host_values = {host_discrete, host_continuous};
  return c;
}

} // namespace

extern "C" {

// plan_out: layout (0 warps, 1 block), log2_cols, block_threads, vec,
// splits, number of launches.
void hee_emulated_forward(
    int has_discrete,
    const void* logits,
    int logits_dtype,
    int64_t batch,
    int64_t num_cols,
    int64_t row_stride,
    void* row_stats,
    int has_continuous,
    const void* log_std,
    int log_std_dtype,
    int64_t log_std_rows,
    int64_t log_std_dims,
    int per_sample_log_std,
    const void* coeff_values,
    int coeff_dtype,
    int coeff_per_head,
    int64_t coeff_stride,
    double host_coeff_discrete,
    double host_coeff_continuous,
    const double* params,
    void* const* outputs,
    int output_dtype,
    int num_multiprocessors,
    int64_t* plan_out) {
  ForwardProblem p;
  p.has_discrete = has_discrete != 0;
  p.logits = logits;
  p.logits_dtype = static_cast<DType>(logits_dtype);
  p.batch = batch;
  p.num_cols = num_cols;
  p.row_stride = row_stride;
  p.row_stats = row_stats;
  p.has_continuous = has_continuous != 0;
  p.log_std = log_std;
  p.log_std_dtype = static_cast<DType>(log_std_dtype);
  p.log_std_rows = log_std_rows;
  p.log_std_dims = log_std_dims;
  p.per_sample_log_std = per_sample_log_std != 0;
  p.coeff = coefficients_of(
      coeff_values, coeff_dtype, coeff_per_head, coeff_stride,
      host_coeff_discrete, host_coeff_continuous);
  p.params = loss_params_from_array(params);
  for (int i = 0; i < 7; ++i) {
    p.outputs[i] = outputs[i];
  }
  p.output_dtype = static_cast<DType>(output_dtype);

  const ForwardLaunchPlan plan =
      plan_forward_launch(p, DeviceShape{num_multiprocessors, 2048});
  std::vector<double> entropy_partials(plan.num_entropy_partials + 1);
  std::vector<double> log_std_partials(plan.num_log_std_blocks + 1);
  std::vector<double> split_states(plan.num_split_states * 3 + 1);  // room for doubles
  ForwardWorkspace work;
  work.entropy_partials = entropy_partials.data();
  work.log_std_partials = log_std_partials.data();
  work.split_states = split_states.data();
  int64_t launches = 0;
  launch_forward(p, plan, work, CountingEmulatedLaunch{&launches});
  plan_out[0] = plan.layout == RowLayout::kRowInBlock ? 1 : 0;
  plan_out[1] = plan.log2_cols;
  plan_out[2] = plan.block_threads;
  plan_out[3] = plan.vec;
  plan_out[4] = plan.splits;
  plan_out[5] = launches;
}

// quotients[i] = dividends[i] / divisor by the backward's FastDivider.
void hee_fast_divide(
    uint32_t divisor,
    const uint32_t* dividends,
    int64_t count,
    uint32_t* quotients) {
  const FastDivider d = FastDivider::of(divisor);
  for (int64_t i = 0; i < count; ++i) {
    quotients[i] = d.divide(dividends[i]);
  }
}

// The forward's launch plan alone, for shapes too large to run: out gets the
// layout (0 warps, 1 block), the logit blocks, the log_std blocks and the
// column splits.
void hee_plan_forward(
    int64_t batch,
    int64_t num_cols,
    int64_t log_std_count,
    int num_multiprocessors,
    int threads_per_multiprocessor,
    int64_t* out) {
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
      p, DeviceShape{num_multiprocessors, threads_per_multiprocessor});
  out[0] = plan.layout == RowLayout::kRowInBlock ? 1 : 0;
  out[1] = plan.num_logit_blocks;
  out[2] = plan.num_log_std_blocks;
  out[3] = plan.splits;
}

// grads: 7 pointers (nullptr: absent), values of output_dtype. Returns the
// number of launches.
int64_t hee_emulated_backward(
    int has_discrete,
    int has_continuous,
    const void* logits,
    int logits_dtype,
    int64_t batch,
    int64_t num_cols,
    int64_t row_stride,
    const void* row_stats,
    void* grad_logits,
    double discrete_mean_count,
    double continuous_mean_count,
    void* grad_log_std,
    int grad_log_std_dtype,
    void* grad_coeff,
    int grad_coeff_dtype,
    const void* const* upstream,
    const void* discrete_entropy,
    const void* continuous_entropy,
    int output_dtype,
    const void* coeff_values,
    int coeff_dtype,
    int coeff_per_head,
    int64_t coeff_stride,
    double host_coeff_discrete,
    double host_coeff_continuous,
    const double* params,
    int num_multiprocessors) {
  BackwardProblem p;
  p.has_discrete = has_discrete != 0;
  p.has_continuous = has_continuous != 0;
  p.logits = logits;
  p.logits_dtype = static_cast<DType>(logits_dtype);
  p.batch = batch;
  p.num_cols = num_cols;
  p.row_stride = row_stride;
  p.row_stats = row_stats;
  p.grad_logits = grad_logits;
  p.discrete_mean_count = discrete_mean_count;
  p.continuous_mean_count = continuous_mean_count;
  p.grad_log_std = grad_log_std;
  p.grad_log_std_dtype = static_cast<DType>(grad_log_std_dtype);
  p.grad_coeff = grad_coeff;
  p.grad_coeff_dtype = static_cast<DType>(grad_coeff_dtype);
  for (int i = 0; i < 7; ++i) {
    p.upstream[i] = {upstream[i], static_cast<DType>(output_dtype)};
  }
  p.discrete_entropy = {discrete_entropy, static_cast<DType>(output_dtype)};
  p.continuous_entropy = {continuous_entropy, static_cast<DType>(output_dtype)};
  p.coeff = coefficients_of(
      coeff_values, coeff_dtype, coeff_per_head, coeff_stride,
      host_coeff_discrete, host_coeff_continuous);
  p.params = loss_params_from_array(params);
  int64_t launches = 0;
  launch_backward(
      p, DeviceShape{num_multiprocessors, 2048}, CountingEmulatedLaunch{&launches});
  return launches;
}

} // extern "C"

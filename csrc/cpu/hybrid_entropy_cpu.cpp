// CPU kernels of hybrid_entropy_loss and its backward: argument handling,
// the parallel loop over row blocks and the deterministic batch reduction.
// The per-row math runs in the ISA-specific row kernels (row_kernels.h).
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../ops.h"
#include "isa.h"
#include "row_kernels.h"

namespace hee {
namespace cpu {
namespace {

// Rows are reduced in fixed blocks, each summed in order, and the block sums
// are then added in order: the batch mean is bitwise the same whatever the
// number of threads.
constexpr int64_t kRowsPerBlock = 64;
// Work below this many elements runs on the calling thread: waking the pool
// costs more than it saves.
constexpr int64_t kMinElementsPerTask = 32768;

template <typename scalar_t>
ForwardRowsFn<scalar_t> forward_rows_kernel(CpuIsa isa) {
#ifndef HEE_GENERIC_CPU_ONLY
  switch (isa) {
    case CpuIsa::kAvx512:
      return &avx512::forward_rows<scalar_t>;
    case CpuIsa::kAvx2:
      return &avx2::forward_rows<scalar_t>;
    case CpuIsa::kGeneric:
      break;
  }
#endif
  return &generic::forward_rows<scalar_t>;
}

template <typename scalar_t>
BackwardRowsFn<scalar_t> backward_rows_kernel(CpuIsa isa) {
#ifndef HEE_GENERIC_CPU_ONLY
  switch (isa) {
    case CpuIsa::kAvx512:
      return &avx512::backward_rows<scalar_t>;
    case CpuIsa::kAvx2:
      return &avx2::backward_rows<scalar_t>;
    case CpuIsa::kGeneric:
      break;
  }
#endif
  return &generic::backward_rows<scalar_t>;
}

// The value of a 0-dim CPU tensor, read directly (no dispatcher round trip).
double read_scalar(const at::Tensor& t) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, t.scalar_type(), "read_scalar",
      [&] { return static_cast<double>(*t.const_data_ptr<scalar_t>()); });
}

double read_scalar_or_zero(const std::optional<at::Tensor>& t) {
  return t.has_value() ? read_scalar(*t) : 0.0;
}

// The row kernels want unit column stride; any row stride (0 for rows
// expanded from one) is fine.
at::Tensor with_unit_column_stride(const at::Tensor& logits) {
  return logits.size(1) == 1 || logits.stride(1) == 1 ? logits
                                                      : logits.contiguous();
}

template <typename scalar_t>
LogitRows<scalar_t> logit_rows(const at::Tensor& logits) {
  return {logits.const_data_ptr<scalar_t>(), logits.stride(0), logits.size(1)};
}

// Sum over rows [row_begin, row_end) and all columns of a [B, D] tensor.
double sum_rows(const at::Tensor& values, int64_t row_begin, int64_t row_end) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, values.scalar_type(), "sum_rows", [&] {
        const scalar_t* data = values.const_data_ptr<scalar_t>();
        const int64_t row_stride = values.stride(0);
        const int64_t col_stride = values.stride(1);
        const int64_t num_cols = values.size(1);
        double sum = 0.0;
        for (int64_t i = row_begin; i < row_end; ++i) {
          for (int64_t j = 0; j < num_cols; ++j) {
            sum += static_cast<double>(data[i * row_stride + j * col_stride]);
          }
        }
        return sum;
      });
}

template <typename T>
double ordered_sum(const std::vector<T>& values) {
  double sum = 0.0;
  for (const T& v : values) {
    sum += static_cast<double>(v);
  }
  return sum;
}

// Batch sums of the discrete row entropies and of log_std, in one parallel
// pass over row blocks; fills row_logsumexp and row_entropy on the way.
struct BatchSums {
  double row_entropy = 0.0;
  double log_std = 0.0;
};

BatchSums forward_batch_sums(
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& row_logsumexp,
    const at::Tensor& row_entropy) {
  const bool per_row_log_std = log_std.has_value() && log_std->dim() == 2;
  const int64_t batch = logits.has_value() ? logits->size(0)
      : per_row_log_std                    ? log_std->size(0)
                                           : 0;
  BatchSums sums;
  if (log_std.has_value() && !per_row_log_std) {
    sums.log_std = sum_rows(log_std->view({1, -1}), 0, 1);
  }
  if (batch == 0) {
    return sums;
  }
  const int64_t num_blocks = (batch + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t row_width = (logits.has_value() ? logits->size(1) : 0) +
      (per_row_log_std ? log_std->size(1) : 0);
  const int64_t grain_blocks = std::max<int64_t>(
      1, kMinElementsPerTask / (kRowsPerBlock * std::max<int64_t>(row_width, 1)));
  const CpuIsa isa = selected_cpu_isa();
  std::vector<double> block_entropy_sums(num_blocks, 0.0);
  std::vector<double> block_log_std_sums(num_blocks, 0.0);
  at::parallel_for(0, num_blocks, grain_blocks, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t row_begin = block * kRowsPerBlock;
      const int64_t row_end = std::min(batch, row_begin + kRowsPerBlock);
      if (logits.has_value()) {
        AT_DISPATCH_FLOATING_TYPES_AND2(
            at::kHalf, at::kBFloat16, logits->scalar_type(), "forward_rows",
            [&] {
              using acc = acc_t<scalar_t>;
              acc* entropy = row_entropy.data_ptr<acc>();
              forward_rows_kernel<scalar_t>(isa)(
                  logit_rows<scalar_t>(*logits), row_begin, row_end,
                  row_logsumexp.data_ptr<acc>(), entropy);
              double sum = 0.0;
              for (int64_t i = row_begin; i < row_end; ++i) {
                sum += static_cast<double>(entropy[i]);
              }
              block_entropy_sums[block] = sum;
            });
      }
      if (per_row_log_std) {
        block_log_std_sums[block] = sum_rows(*log_std, row_begin, row_end);
      }
    }
  });
  sums.row_entropy = ordered_sum(block_entropy_sums);
  if (per_row_log_std) {
    sums.log_std = ordered_sum(block_log_std_sums);
  }
  return sums;
}

LossForwardOutputs hybrid_entropy_loss_cpu(
    const std::optional<at::Tensor>& logits_in,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  check_loss_inputs(
      logits_in, log_std, entropy_coeff, discrete_entropy_weight,
      continuous_entropy_weight, min_entropy_threshold,
      continuous_min_entropy_threshold, penalty_multiplier);
  const std::optional<at::Tensor> logits = logits_in.has_value()
      ? std::optional<at::Tensor>(with_unit_column_stride(*logits_in))
      : std::nullopt;
  const auto scalar_options =
      at::TensorOptions().dtype(loss_output_dtype(logits, log_std));

  at::Tensor row_logsumexp;
  at::Tensor row_entropy;
  if (logits.has_value()) {
    const auto row_options = logits->options().dtype(row_stats_dtype(*logits));
    row_logsumexp = at::empty({logits->size(0)}, row_options);
    row_entropy = at::empty({logits->size(0)}, row_options);
  } else {
    row_logsumexp = at::empty({0}, scalar_options);
    row_entropy = at::empty({0}, scalar_options);
  }
  const BatchSums sums =
      forward_batch_sums(logits, log_std, row_logsumexp, row_entropy);

  const double discrete_entropy =
      logits.has_value() ? sums.row_entropy / logits->size(0) : 0.0;
  double continuous_entropy = 0.0;
  if (log_std.has_value()) {
    const int64_t rows = log_std->dim() == 2 ? log_std->size(0) : 1;
    continuous_entropy =
        math::gaussian_entropy(sums.log_std / rows, log_std->size(-1));
  }
  const math::LossComponents c = math::combine_losses(
      read_scalar(entropy_coeff), logits.has_value(), discrete_entropy,
      log_std.has_value(), continuous_entropy,
      make_loss_params(
          discrete_entropy_weight, continuous_entropy_weight,
          min_entropy_threshold, continuous_min_entropy_threshold,
          penalty_multiplier));
  auto scalar = [&](double value) {
    return at::scalar_tensor(value, scalar_options);
  };
  return {scalar(c.total),
          scalar(c.discrete),
          scalar(c.continuous),
          scalar(c.discrete_penalty),
          scalar(c.continuous_penalty),
          scalar(c.discrete_entropy),
          scalar(c.continuous_entropy),
          row_logsumexp,
          row_entropy};
}

at::Tensor logits_gradient(
    const at::Tensor& logits_in,
    const at::Tensor& row_logsumexp,
    const at::Tensor& row_entropy,
    double grad_discrete_entropy) {
  const at::Tensor logits = with_unit_column_stride(logits_in);
  const int64_t batch = logits.size(0);
  const int64_t num_cols = logits.size(1);
  at::Tensor grad = at::empty({batch, num_cols}, logits.options());
  const int64_t grain_rows =
      std::max<int64_t>(1, kMinElementsPerTask / num_cols);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "backward_rows", [&] {
        using acc = acc_t<scalar_t>;
        const auto kernel = backward_rows_kernel<scalar_t>(selected_cpu_isa());
        const LogitRows<scalar_t> rows = logit_rows<scalar_t>(logits);
        const acc* lse = row_logsumexp.const_data_ptr<acc>();
        const acc* entropy = row_entropy.const_data_ptr<acc>();
        // d H_d / d h_d[i] = 1 / B
        const acc grad_scale = static_cast<acc>(grad_discrete_entropy / batch);
        scalar_t* out = grad.data_ptr<scalar_t>();
        at::parallel_for(0, batch, grain_rows, [&](int64_t begin, int64_t end) {
          kernel(rows, begin, end, lse, entropy, grad_scale, out);
        });
      });
  return grad;
}

LossBackwardOutputs hybrid_entropy_loss_backward_cpu(
    const std::optional<at::Tensor>& grad_total,
    const std::optional<at::Tensor>& grad_discrete,
    const std::optional<at::Tensor>& grad_continuous,
    const std::optional<at::Tensor>& grad_discrete_penalty,
    const std::optional<at::Tensor>& grad_continuous_penalty,
    const std::optional<at::Tensor>& grad_discrete_entropy,
    const std::optional<at::Tensor>& grad_continuous_entropy,
    const std::optional<at::Tensor>& logits,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    const at::Tensor& row_logsumexp,
    const at::Tensor& row_entropy,
    const at::Tensor& discrete_entropy,
    const at::Tensor& continuous_entropy,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier,
    std::array<bool, 3> output_mask) {
  math::LossGrads upstream;
  upstream.total = read_scalar_or_zero(grad_total);
  upstream.discrete = read_scalar_or_zero(grad_discrete);
  upstream.continuous = read_scalar_or_zero(grad_continuous);
  upstream.discrete_penalty = read_scalar_or_zero(grad_discrete_penalty);
  upstream.continuous_penalty = read_scalar_or_zero(grad_continuous_penalty);
  upstream.discrete_entropy = read_scalar_or_zero(grad_discrete_entropy);
  upstream.continuous_entropy = read_scalar_or_zero(grad_continuous_entropy);
  const math::BatchEntropyGrads g = math::combine_losses_backward(
      read_scalar(entropy_coeff), logits.has_value(),
      read_scalar(discrete_entropy), log_std.has_value(),
      read_scalar(continuous_entropy),
      make_loss_params(
          discrete_entropy_weight, continuous_entropy_weight,
          min_entropy_threshold, continuous_min_entropy_threshold,
          penalty_multiplier),
      upstream);

  at::Tensor grad_logits;
  if (output_mask[0] && logits.has_value()) {
    grad_logits = logits_gradient(
        *logits, row_logsumexp, row_entropy, g.discrete_entropy);
  } else {
    grad_logits = at::empty(
        {0}, logits.has_value() ? logits->options() : entropy_coeff.options());
  }
  at::Tensor grad_log_std;
  if (output_mask[1] && log_std.has_value()) {
    // h_c[i] is linear in log_std[i, :]; a shared [D] log_std enters every
    // row, so the 1 / B of the batch mean cancels.
    const double per_element = log_std->dim() == 2
        ? g.continuous_entropy / log_std->size(0)
        : g.continuous_entropy;
    grad_log_std = at::full(log_std->sizes(), per_element, log_std->options());
  } else {
    grad_log_std = at::empty(
        {0}, log_std.has_value() ? log_std->options() : entropy_coeff.options());
  }
  at::Tensor grad_entropy_coeff = output_mask[2]
      ? at::scalar_tensor(g.coeff, entropy_coeff.options())
      : at::empty({0}, entropy_coeff.options());
  return {grad_logits, grad_log_std, grad_entropy_coeff};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CPU, m) {
  m.impl("hybrid_entropy_loss", &hybrid_entropy_loss_cpu);
  m.impl("hybrid_entropy_loss_backward", &hybrid_entropy_loss_backward_cpu);
}

} // namespace cpu
} // namespace hee

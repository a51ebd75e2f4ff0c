// CPU kernels of hybrid_entropy_loss and its backward: argument handling,
// the parallel loop over row blocks and the deterministic batch reduction.
// The per-row math runs in the ISA-specific row kernels (row_kernels.h).
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../ops.h"
#include "isa.h"
#include "row_kernels.h"

namespace hee {
namespace cpu {
namespace {

// Rows are reduced in fixed blocks, each summed in a fixed order, and the
// block sums are then added in order: the batch means are bitwise the same
// whatever the number of threads.
constexpr int64_t kRowsPerBlock = 64;
// Work below this many elements runs on the calling thread: waking the pool
// costs more than it saves.
constexpr int64_t kMinElementsPerTask = 32768;
// Consecutive blocks handed to one row-kernel call. Per call, dispatch and
// tensor accessors cost about as much as one 64-row block at K = 4; runs of
// 16 blocks keep a run's row statistics in L1 for the block sums.
constexpr int64_t kBlocksPerRun = 16;

// The row kernels of one ISA build for one dtype.
template <typename scalar_t>
struct RowKernels {
  ForwardRowsFn<scalar_t> forward;
  BackwardRowsFn<scalar_t> backward;
  SumValuesFn<scalar_t> sum;
};

template <typename scalar_t>
RowKernels<scalar_t> row_kernels(CpuIsa isa) {
#ifndef HEE_GENERIC_CPU_ONLY
  switch (isa) {
    case CpuIsa::kAvx512:
      return {&avx512::forward_rows<scalar_t>, &avx512::backward_rows<scalar_t>,
              &avx512::sum_values<scalar_t>};
    case CpuIsa::kAvx2:
      return {&avx2::forward_rows<scalar_t>, &avx2::backward_rows<scalar_t>,
              &avx2::sum_values<scalar_t>};
    case CpuIsa::kGeneric:
      break;
  }
#endif
  return {&generic::forward_rows<scalar_t>, &generic::backward_rows<scalar_t>,
          &generic::sum_values<scalar_t>};
}

#define HEE_DISPATCH_FLOATING(dtype, ...)                                   \
  AT_DISPATCH_FLOATING_TYPES_AND2(                                          \
      at::kHalf, at::kBFloat16, dtype, "hybrid_entropy_loss", __VA_ARGS__)

// The value of a 0-dim CPU tensor, read directly (no dispatcher round trip).
double read_scalar(const at::Tensor& t) {
  return HEE_DISPATCH_FLOATING(t.scalar_type(), [&] {
    return static_cast<double>(*t.const_data_ptr<scalar_t>());
  });
}

double read_scalar_or_zero(const std::optional<at::Tensor>& t) {
  return t.has_value() ? read_scalar(*t) : 0.0;
}

// entropy_coeff: 0-dim (both heads) or [2] (discrete, continuous).
math::HeadCoefficients read_coefficients(const at::Tensor& entropy_coeff) {
  if (entropy_coeff.dim() == 0) {
    const double both = read_scalar(entropy_coeff);
    return {both, both};
  }
  return {read_scalar(entropy_coeff[0]), read_scalar(entropy_coeff[1])};
}

// Outputs are allocated directly on the CPU allocator: at this op's small
// sizes, a dispatcher round trip per output would dominate the call.
at::Tensor new_cpu_tensor(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::detail::empty_cpu(sizes, dtype, /*pin_memory=*/false, std::nullopt);
}

// One value in one element of storage, seen with shape `sizes` through
// all-zero strides: the 0-dim outputs, and the log_std gradient, which is the
// same number for every element (h_c is linear in log_std) and so is returned
// broadcast, as torch's sum and mean backward return theirs, rather than
// written out as a [B, D] fill.
at::Tensor new_cpu_constant(
    double value,
    at::ScalarType dtype,
    at::IntArrayRef sizes = {}) {
  const c10::SmallVector<int64_t, 4> zero_strides(sizes.size(), 0);
  at::Tensor t = at::detail::empty_strided_cpu(
      sizes, zero_strides, dtype, /*pin_memory=*/false);
  if (t.numel() > 0) {
    HEE_DISPATCH_FLOATING(dtype, [&] {
      *t.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(value);
    });
  }
  return t;
}

// Placeholder for a gradient nobody asked for (schemas cannot return None).
at::Tensor not_requested(at::ScalarType dtype) {
  return new_cpu_tensor({0}, dtype);
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

// log_std as contiguous rows: [B, D] when each sample has its own, or [1, D]
// when the batch shares one ([D], or [B, D] expanded from a row).
struct LogStdRows {
  at::Tensor rows;
  bool per_sample;
};

LogStdRows log_std_rows(const at::Tensor& log_std) {
  if (log_std.dim() == 1) {
    return {log_std.contiguous().view({1, -1}), false};
  }
  if (log_std.size(0) > 1 && log_std.stride(0) == 0) {
    return {log_std[0].contiguous().view({1, -1}), false};
  }
  return {log_std.contiguous(), true};
}

// Batch size and elements per row of the pass over rows.
struct RowPass {
  int64_t batch = 0;
  int64_t row_width = 0;

  int64_t num_blocks() const {
    return (batch + kRowsPerBlock - 1) / kRowsPerBlock;
  }
  int64_t grain_blocks() const {
    return std::max<int64_t>(
        1,
        kMinElementsPerTask /
            (kRowsPerBlock * std::max<int64_t>(row_width, 1)));
  }
  int64_t first_row(int64_t block) const {
    return block * kRowsPerBlock;
  }
  int64_t end_row(int64_t block) const {
    return std::min(batch, (block + 1) * kRowsPerBlock);
  }
  // block_sums[block] = sum of the `values_per_row` values of each row of
  // the block (rows laid out one after another from `values`), for the
  // blocks [first_block, end_block).
  template <typename T>
  void sum_each_block(
      SumValuesFn<T> sum,
      const T* values,
      int64_t values_per_row,
      int64_t first_block,
      int64_t end_block,
      std::vector<double>& block_sums) const {
    for (int64_t block = first_block; block < end_block; ++block) {
      const int64_t row_begin = first_row(block);
      block_sums[block] = sum(
          values + row_begin * values_per_row,
          (end_row(block) - row_begin) * values_per_row);
    }
  }
  // Calls body(first_block, end_block) for runs of at most kBlocksPerRun
  // consecutive blocks, in parallel.
  template <typename F>
  void for_each_run(const F& body) const {
    at::parallel_for(
        0, num_blocks(), grain_blocks(), [&](int64_t begin, int64_t end) {
          for (int64_t first = begin; first < end; first += kBlocksPerRun) {
            body(first, std::min(end, first + kBlocksPerRun));
          }
        });
  }
};

RowPass make_row_pass(
    const std::optional<at::Tensor>& logits,
    const std::optional<LogStdRows>& log_std) {
  RowPass pass;
  if (logits.has_value()) {
    pass.batch = logits->size(0);
    pass.row_width += logits->size(1);
  }
  if (log_std.has_value() && log_std->per_sample) {
    pass.batch = log_std->rows.size(0);
    pass.row_width += log_std->rows.size(1);
  }
  return pass;
}

template <typename T>
double ordered_sum(const std::vector<T>& values) {
  double sum = 0.0;
  for (const T& v : values) {
    sum += static_cast<double>(v);
  }
  return sum;
}

double sum_all(const at::Tensor& contiguous, CpuIsa isa) {
  return HEE_DISPATCH_FLOATING(contiguous.scalar_type(), [&] {
    return static_cast<double>(row_kernels<scalar_t>(isa).sum(
        contiguous.const_data_ptr<scalar_t>(), contiguous.numel()));
  });
}

template <typename acc>
RowStats<acc> row_stats_view(const at::Tensor& row_stats) {
  acc* base = row_stats.data_ptr<acc>();
  const int64_t batch = row_stats.size(1);
  return {base, base + batch, base + 2 * batch};
}

// Batch means of both heads in one parallel pass over row blocks; fills the
// [3, B] row statistics on the way.
struct BatchMeans {
  double discrete_entropy = 0.0;
  double continuous_entropy = 0.0;
};

BatchMeans forward_pass(
    const std::optional<at::Tensor>& logits,
    const std::optional<LogStdRows>& log_std,
    const at::Tensor& row_stats,
    CpuIsa isa) {
  const RowPass pass = make_row_pass(logits, log_std);
  std::vector<double> block_entropy_sums(pass.num_blocks(), 0.0);
  std::vector<double> block_log_std_sums(pass.num_blocks(), 0.0);
  const bool per_sample_log_std = log_std.has_value() && log_std->per_sample;
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    if (logits.has_value()) {
      HEE_DISPATCH_FLOATING(logits->scalar_type(), [&] {
        using acc = acc_t<scalar_t>;
        const RowStats<acc> stats = row_stats_view<acc>(row_stats);
        row_kernels<scalar_t>(isa).forward(
            logit_rows<scalar_t>(*logits), pass.first_row(first_block),
            pass.end_row(end_block - 1), stats);
        pass.sum_each_block(
            row_kernels<acc>(isa).sum, stats.entropy, /*values_per_row=*/1,
            first_block, end_block, block_entropy_sums);
      });
    }
    if (per_sample_log_std) {
      const at::Tensor& rows = log_std->rows;
      HEE_DISPATCH_FLOATING(rows.scalar_type(), [&] {
        pass.sum_each_block(
            row_kernels<scalar_t>(isa).sum, rows.const_data_ptr<scalar_t>(),
            rows.size(1), first_block, end_block, block_log_std_sums);
      });
    }
  });

  BatchMeans means;
  if (logits.has_value()) {
    means.discrete_entropy = ordered_sum(block_entropy_sums) / pass.batch;
  }
  if (log_std.has_value()) {
    const double mean_sum_log_std = per_sample_log_std
        ? ordered_sum(block_log_std_sums) / pass.batch
        : sum_all(log_std->rows, isa);
    means.continuous_entropy =
        math::gaussian_entropy(mean_sum_log_std, log_std->rows.size(1));
  }
  return means;
}

LossForwardOutputs hybrid_entropy_loss_cpu(
    const std::optional<at::Tensor>& logits_in,
    const std::optional<at::Tensor>& log_std_in,
    const at::Tensor& entropy_coeff,
    double discrete_entropy_weight,
    double continuous_entropy_weight,
    std::optional<double> min_entropy_threshold,
    std::optional<double> continuous_min_entropy_threshold,
    double penalty_multiplier) {
  check_loss_inputs(
      logits_in, log_std_in, entropy_coeff, discrete_entropy_weight,
      continuous_entropy_weight, min_entropy_threshold,
      continuous_min_entropy_threshold, penalty_multiplier);
  const std::optional<at::Tensor> logits = logits_in.has_value()
      ? std::optional<at::Tensor>(with_unit_column_stride(*logits_in))
      : std::nullopt;
  const std::optional<LogStdRows> log_std = log_std_in.has_value()
      ? std::optional<LogStdRows>(log_std_rows(*log_std_in))
      : std::nullopt;
  const at::ScalarType out_dtype = loss_output_dtype(logits_in, log_std_in);

  const at::ScalarType stats_dtype =
      logits.has_value() ? row_stats_dtype(*logits) : out_dtype;
  const int64_t stats_rows = logits.has_value() ? logits->size(0) : 0;
  at::Tensor row_stats = new_cpu_tensor({3, stats_rows}, stats_dtype);
  const BatchMeans means =
      forward_pass(logits, log_std, row_stats, selected_cpu_isa());

  const math::LossComponents c = math::combine_losses(
      read_coefficients(entropy_coeff), logits.has_value(),
      means.discrete_entropy,
      log_std.has_value(), means.continuous_entropy,
      make_loss_params(
          discrete_entropy_weight, continuous_entropy_weight,
          min_entropy_threshold, continuous_min_entropy_threshold,
          penalty_multiplier));
  auto scalar = [&](double value) { return new_cpu_constant(value, out_dtype); };
  return {scalar(c.total),
          scalar(c.discrete),
          scalar(c.continuous),
          scalar(c.discrete_penalty),
          scalar(c.continuous_penalty),
          scalar(c.discrete_entropy),
          scalar(c.continuous_entropy),
          row_stats};
}

// The logits gradient, in one parallel pass over row blocks.
void backward_pass(
    const at::Tensor& logits,
    const at::Tensor& row_stats,
    double grad_discrete_entropy,
    const at::Tensor& grad_logits,
    CpuIsa isa) {
  const RowPass pass{logits.size(0), logits.size(1)};
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    HEE_DISPATCH_FLOATING(logits.scalar_type(), [&] {
      using acc = acc_t<scalar_t>;
      // d H_d / d h_d[i] = 1 / B
      const acc grad_scale =
          static_cast<acc>(grad_discrete_entropy / logits.size(0));
      row_kernels<scalar_t>(isa).backward(
          logit_rows<scalar_t>(logits), pass.first_row(first_block),
          pass.end_row(end_block - 1), row_stats_view<acc>(row_stats),
          grad_scale, grad_logits.data_ptr<scalar_t>());
    });
  });
}

LossBackwardOutputs hybrid_entropy_loss_backward_cpu(
    const std::optional<at::Tensor>& grad_total,
    const std::optional<at::Tensor>& grad_discrete,
    const std::optional<at::Tensor>& grad_continuous,
    const std::optional<at::Tensor>& grad_discrete_penalty,
    const std::optional<at::Tensor>& grad_continuous_penalty,
    const std::optional<at::Tensor>& grad_discrete_entropy,
    const std::optional<at::Tensor>& grad_continuous_entropy,
    const std::optional<at::Tensor>& logits_in,
    const std::optional<at::Tensor>& log_std,
    const at::Tensor& entropy_coeff,
    const at::Tensor& row_stats,
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
      read_coefficients(entropy_coeff), logits_in.has_value(),
      read_scalar(discrete_entropy), log_std.has_value(),
      read_scalar(continuous_entropy),
      make_loss_params(
          discrete_entropy_weight, continuous_entropy_weight,
          min_entropy_threshold, continuous_min_entropy_threshold,
          penalty_multiplier),
      upstream);

  const bool want_logits = output_mask[0] && logits_in.has_value();
  const bool want_log_std = output_mask[1] && log_std.has_value();
  const std::optional<at::Tensor> logits = want_logits
      ? std::optional<at::Tensor>(with_unit_column_stride(*logits_in))
      : std::nullopt;
  const at::ScalarType placeholder_dtype = entropy_coeff.scalar_type();
  at::Tensor grad_logits = want_logits
      ? new_cpu_tensor(logits->sizes(), logits->scalar_type())
      : not_requested(
            logits_in.has_value() ? logits_in->scalar_type()
                                  : placeholder_dtype);
  if (want_logits) {
    backward_pass(
        *logits, row_stats, g.discrete_entropy, grad_logits,
        selected_cpu_isa());
  }
  // h_c[i] is linear in log_std[i, :]; a shared [D] log_std enters every
  // row, so the 1 / B of the batch mean cancels.
  at::Tensor grad_log_std = want_log_std
      ? new_cpu_constant(
            log_std->dim() == 2 ? g.continuous_entropy / log_std->size(0)
                                : g.continuous_entropy,
            log_std->scalar_type(), log_std->sizes())
      : not_requested(
            log_std.has_value() ? log_std->scalar_type() : placeholder_dtype);
  at::Tensor grad_entropy_coeff = not_requested(entropy_coeff.scalar_type());
  if (output_mask[2] && entropy_coeff.dim() == 0) {
    grad_entropy_coeff = new_cpu_constant(
        g.coeff.discrete + g.coeff.continuous, entropy_coeff.scalar_type());
  } else if (output_mask[2]) {
    grad_entropy_coeff = new_cpu_tensor({2}, entropy_coeff.scalar_type());
    HEE_DISPATCH_FLOATING(entropy_coeff.scalar_type(), [&] {
      scalar_t* out = grad_entropy_coeff.mutable_data_ptr<scalar_t>();
      out[0] = static_cast<scalar_t>(g.coeff.discrete);
      out[1] = static_cast<scalar_t>(g.coeff.continuous);
    });
  }
  return {grad_logits, grad_log_std, grad_entropy_coeff};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CPU, m) {
  m.impl("hybrid_entropy_loss", &hybrid_entropy_loss_cpu);
  m.impl("hybrid_entropy_loss_backward", &hybrid_entropy_loss_backward_cpu);
}

} // namespace cpu
} // namespace hee

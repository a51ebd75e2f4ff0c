// CPU kernels of hybrid_entropy_loss and its backward: the parallel loop over
// row blocks and the deterministic batch reduction. What is not about the
// CPU (checks, output shapes and dtypes, input layout, gradient scales) comes
// from the plan (loss_plan.h); the per-row math runs in the ISA-specific row
// kernels (row_kernels.h).
#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../loss_plan.h"
#include "cpu_tensors.h"
#include "isa.h"
#include "row_kernel_table.h"

namespace hee {
namespace cpu {
namespace {

// Rows are reduced in fixed blocks, each summed in a fixed order, and the
// block sums are then added in order: the batch means are bitwise the same
// whatever the number of threads.
constexpr int64_t kRowsPerBlock = 64;
// Consecutive blocks handed to one row-kernel call. Each call pays for
// dispatch and tensor accessors, which one 64-row block at small K does not
// hide; runs of 16 blocks keep a run's row statistics in L1 for the block
// sums (benchmarks/README.md, "Parallel loop").
constexpr int64_t kBlocksPerRun = 16;

#define HEE_DISPATCH_FLOATING(dtype, ...)                                   \
  AT_DISPATCH_FLOATING_TYPES_AND2(                                          \
      at::kHalf, at::kBFloat16, dtype, "hybrid_entropy_loss", __VA_ARGS__)

double read_host_value_or_zero(const OptionalTensor& t) {
  return t.has_value() ? read_host_value(*t) : 0.0;
}


// A tensor of `spec` holding `values`, in storage order: the 0-dim outputs,
// the broadcast log_std gradient (one element of storage) and the
// coefficient's gradient (one value, or one per head).
at::Tensor cpu_values(const TensorSpec& spec, std::initializer_list<double> values) {
  at::Tensor t = empty_cpu(spec);
  HEE_DISPATCH_FLOATING(spec.dtype, [&] {
    scalar_t* out = t.mutable_data_ptr<scalar_t>();
    int64_t i = 0;
    for (const double value : values) {
      out[i++] = static_cast<scalar_t>(value);
    }
  });
  return t;
}

// The logits and their action mask (laid out by logits_for_kernels), if any.
template <typename scalar_t>
LogitRows<scalar_t> logit_rows(
    const at::Tensor& logits,
    const OptionalTensor& action_mask) {
  LogitRows<scalar_t> rows{
      logits.const_data_ptr<scalar_t>(), logits.stride(0), logits.size(1)};
  if (action_mask.has_value()) {
    rows.allowed = action_mask->const_data_ptr<bool>();
    rows.allowed_row_stride = action_mask->stride(0);
  }
  return rows;
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
    const OptionalTensor& logits,
    const std::optional<KernelLogStd>& log_std) {
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

// Row weights as the passes read them: [B] float64, contiguous, and their
// sum, added in the blocks of a pass in block order (the blocks depend only
// on B), so that the forward and the backward divide by the same value
// whatever the number of threads.
struct HostRowWeights {
  at::Tensor values;
  double sum = 0.0;

  const double* data() const {
    return values.const_data_ptr<double>();
  }
};

std::optional<HostRowWeights> host_row_weights(const OptionalTensor& row_weights) {
  if (!row_weights.has_value()) {
    return std::nullopt;
  }
  HostRowWeights weights{row_weights->to(at::kDouble).contiguous()};
  const RowPass pass{weights.values.size(0), 1};
  const double* w = weights.data();
  for (int64_t block = 0; block < pass.num_blocks(); ++block) {
    double block_sum = 0.0;
    for (int64_t i = pass.first_row(block); i < pass.end_row(block); ++i) {
      block_sum += w[i];
    }
    weights.sum += block_sum;
  }
  return weights;
}

// block_sums[block] = sum_i w_i * value(i) over the rows of each block in
// [first_block, end_block), in row order.
template <typename ValueOfRow>
void weighted_sum_each_block(
    const RowPass& pass,
    const double* weights,
    int64_t first_block,
    int64_t end_block,
    const ValueOfRow& value_of_row,
    std::vector<double>& block_sums) {
  for (int64_t block = first_block; block < end_block; ++block) {
    double sum = 0.0;
    for (int64_t i = pass.first_row(block); i < pass.end_row(block); ++i) {
      sum += weights[i] * value_of_row(i);
    }
    block_sums[block] = sum;
  }
}

// What the batch means divide by: the given mean_denominator (read on the
// host, where a CPU tensor lives), and sum_i c_i, which the continuous mean
// of a shared log_std needs beside it.
struct HostDenominators {
  std::optional<double> given;
  double weight_sum = 0.0;  // the row weights' sum, or the row count

  // The denominator of a mean of weighted rows: the given one, else
  // weight_sum (without weights the row count: the plain mean).
  double of_rows() const {
    return given.value_or(weight_sum);
  }
};

HostDenominators host_denominators(
    const OptionalTensor& mean_denominator,
    const std::optional<HostRowWeights>& weights,
    const OptionalTensor& logits,
    const OptionalTensor& log_std) {
  HostDenominators d;
  if (mean_denominator.has_value()) {
    d.given = read_host_value(*mean_denominator);
  }
  d.weight_sum = weights.has_value() ? weights->sum
                                     : batch_row_count(logits, log_std);
  return d;
}


// Batch means of both heads in one parallel pass over row blocks; fills the
// [3, B] row statistics on the way.
struct BatchMeans {
  double discrete_entropy = 0.0;
  double continuous_entropy = 0.0;
};

BatchMeans forward_pass(
    const OptionalTensor& logits,
    const OptionalTensor& action_mask,
    const std::optional<KernelLogStd>& log_std,
    const std::optional<HostRowWeights>& weights,
    const HostDenominators& denominators,
    const at::Tensor& row_stats,
    CpuIsa isa) {
  const RowPass pass = make_row_pass(logits, log_std);
  const double* w = weights.has_value() ? weights->data() : nullptr;
  std::vector<double> block_entropy_sums(pass.num_blocks(), 0.0);
  std::vector<double> block_log_std_sums(pass.num_blocks(), 0.0);
  const bool per_sample_log_std = log_std.has_value() && log_std->per_sample;
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    if (logits.has_value()) {
      HEE_DISPATCH_FLOATING(logits->scalar_type(), [&] {
        using acc = acc_t<scalar_t>;
        const RowStats<acc> stats = row_stats_view<acc>(row_stats);
        row_kernels<scalar_t>(isa).forward(
            logit_rows<scalar_t>(*logits, action_mask),
            pass.first_row(first_block),
            pass.end_row(end_block - 1), stats, TakenLogProbs<acc>{});
        if (w == nullptr) {
          pass.sum_each_block(
              row_kernels<acc>(isa).sum, stats.entropy, /*values_per_row=*/1,
              first_block, end_block, block_entropy_sums);
        } else {
          weighted_sum_each_block(
              pass, w, first_block, end_block,
              [&](int64_t i) { return static_cast<double>(stats.entropy[i]); },
              block_entropy_sums);
        }
      });
    }
    if (per_sample_log_std) {
      const at::Tensor& rows = log_std->rows;
      HEE_DISPATCH_FLOATING(rows.scalar_type(), [&] {
        const auto sum = row_kernels<scalar_t>(isa).sum;
        const scalar_t* values = rows.const_data_ptr<scalar_t>();
        const int64_t dims = rows.size(1);
        if (w == nullptr) {
          pass.sum_each_block(
              sum, values, dims, first_block, end_block, block_log_std_sums);
        } else {
          weighted_sum_each_block(
              pass, w, first_block, end_block,
              [&](int64_t i) {
                return static_cast<double>(sum(values + i * dims, dims));
              },
              block_log_std_sums);
        }
      });
    }
  });

  const double denominator = denominators.of_rows();
  BatchMeans means;
  if (logits.has_value()) {
    means.discrete_entropy = ordered_sum(block_entropy_sums) / denominator;
  }
  if (log_std.has_value()) {
    const double num_dims = static_cast<double>(log_std->rows.size(1));
    if (denominators.given.has_value()) {
      means.continuous_entropy = math::gaussian_entropy_over(
          per_sample_log_std ? ordered_sum(block_log_std_sums)
                             : sum_all(log_std->rows, isa),
          !per_sample_log_std, denominators.weight_sum, num_dims, denominator);
    } else {
      const double mean_sum_log_std = per_sample_log_std
          ? ordered_sum(block_log_std_sums) / denominator
          : sum_all(log_std->rows, isa);
      means.continuous_entropy =
          math::gaussian_entropy(mean_sum_log_std, num_dims);
    }
  }
  return means;
}

LossForwardOutputs hybrid_entropy_loss_cpu(const LossForwardArgs& args) {
  const LossForwardPlan plan = plan_loss_forward(args);
  const OptionalTensor logits = plan.has_discrete
      ? OptionalTensor(logits_for_kernels(*args.logits))
      : std::nullopt;
  const std::optional<KernelLogStd> log_std = plan.has_continuous
      ? std::optional<KernelLogStd>(log_std_for_kernels(*args.log_std))
      : std::nullopt;
  at::Tensor row_stats = empty_cpu(plan.row_stats);
  const std::optional<HostRowWeights> weights =
      host_row_weights(args.row_weights);
  const BatchMeans means = forward_pass(
      logits, action_mask_for_kernels(args.action_mask), log_std, weights,
      host_denominators(
          args.mean_denominator, weights, args.logits, args.log_std),
      row_stats, selected_cpu_isa());

  const math::LossComponents c = math::combine_losses(
      read_host_coefficients(args.entropy_coeff), plan.has_discrete,
      means.discrete_entropy, plan.has_continuous, means.continuous_entropy,
      args.params());
  auto component = [&](double value) {
    return cpu_values(plan.component, {value});
  };
  return {component(c.total),
          component(c.discrete),
          component(c.continuous),
          component(c.discrete_penalty),
          component(c.continuous_penalty),
          component(c.discrete_entropy),
          component(c.continuous_entropy),
          row_stats};
}

// The logits gradient, in one parallel pass over row blocks: the mean's
// gradient over its denominator, and with row weights, times each row's
// weight (the per-token backward's per-row scales).
void backward_pass(
    const at::Tensor& logits,
    const OptionalTensor& action_mask,
    const at::Tensor& row_stats,
    double grad_of_mean,
    const std::optional<HostRowWeights>& weights,
    double denominator,
    const at::Tensor& grad_logits,
    CpuIsa isa) {
  const RowPass pass{logits.size(0), logits.size(1)};
  const double* w = weights.has_value() ? weights->data() : nullptr;
  const double grad_per_term = math::mean_term_grad(grad_of_mean, denominator);
  const at::Tensor row_scales = w == nullptr
      ? at::Tensor()
      : at::empty({pass.batch}, logits.options().dtype(row_stats.scalar_type()));
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    HEE_DISPATCH_FLOATING(logits.scalar_type(), [&] {
      using acc = acc_t<scalar_t>;
      const auto backward = row_kernels<scalar_t>(isa).backward;
      const int64_t begin = pass.first_row(first_block);
      const int64_t end = pass.end_row(end_block - 1);
      if (w == nullptr) {
        backward(
            logit_rows<scalar_t>(logits, action_mask), begin, end,
            row_stats_view<acc>(row_stats),
            static_cast<acc>(grad_per_term),
            grad_logits.data_ptr<scalar_t>());
        return;
      }
      // Each row's own gradient scale, through the per-token backward with
      // the entropy's gradient alone: its element is entropy_grad_element's
      // for the same scale, bit for bit.
      acc* row_scale = row_scales.data_ptr<acc>();
      for (int64_t i = begin; i < end; ++i) {
        row_scale[i] =
            static_cast<acc>(math::weighted_term_grad(grad_per_term, w[i]));
      }
      row_kernels<scalar_t>(isa).token_backward(
          logit_rows<scalar_t>(logits, action_mask), begin, end,
          row_stats_view<acc>(row_stats),
          TokenGrads<acc>{row_scale, nullptr, nullptr},
          grad_logits.data_ptr<scalar_t>());
    });
  });
}

// The log_std gradient with row weights and a [B, D] log_std: one value per
// row, in the storage of a [B, D] tensor with strides [1, 0].
at::Tensor weighted_log_std_grad(
    const TensorSpec& spec,
    double grad_of_mean,
    const HostRowWeights& weights,
    double denominator) {
  at::Tensor grad = empty_cpu(spec);
  const double grad_per_term = math::mean_term_grad(grad_of_mean, denominator);
  const double* w = weights.data();
  HEE_DISPATCH_FLOATING(spec.dtype, [&] {
    scalar_t* out = grad.mutable_data_ptr<scalar_t>();
    for (int64_t i = 0; i < weights.values.size(0); ++i) {
      out[i] = static_cast<scalar_t>(
          math::weighted_term_grad(grad_per_term, w[i]));
    }
  });
  return grad;
}

LossBackwardOutputs hybrid_entropy_loss_backward_cpu(
    const LossBackwardArgs& args) {
  const LossBackwardPlan plan = plan_loss_backward(args);
  math::LossGrads upstream;
  upstream.total = read_host_value_or_zero(args.grads[0]);
  upstream.discrete = read_host_value_or_zero(args.grads[1]);
  upstream.continuous = read_host_value_or_zero(args.grads[2]);
  upstream.discrete_penalty = read_host_value_or_zero(args.grads[3]);
  upstream.continuous_penalty = read_host_value_or_zero(args.grads[4]);
  upstream.discrete_entropy = read_host_value_or_zero(args.grads[5]);
  upstream.continuous_entropy = read_host_value_or_zero(args.grads[6]);
  const math::BatchEntropyGrads g = math::combine_losses_backward(
      read_host_coefficients(args.entropy_coeff), plan.has_discrete,
      read_host_value(args.discrete_entropy), plan.has_continuous,
      read_host_value(args.continuous_entropy), args.params(), upstream);

  const std::optional<HostRowWeights> weights =
      host_row_weights(args.row_weights);
  const HostDenominators denominators = host_denominators(
      args.mean_denominator, weights, args.logits, args.log_std);
  at::Tensor grad_logits = empty_cpu(plan.grad_logits);
  if (plan.computes_grad_logits) {
    backward_pass(
        logits_for_kernels(*args.logits),
        action_mask_for_kernels(args.action_mask), args.row_stats,
        g.discrete_entropy,
        weights, denominators.of_rows(), grad_logits, selected_cpu_isa());
  }
  at::Tensor grad_log_std;
  if (!plan.computes_grad_log_std) {
    grad_log_std = empty_cpu(plan.grad_log_std);
  } else if (plan.has_row_weights && log_std_has_own_rows(*args.log_std)) {
    grad_log_std = weighted_log_std_grad(
        plan.grad_log_std, g.continuous_entropy, *weights,
        denominators.of_rows());
  } else if (denominators.given.has_value()) {
    grad_log_std = cpu_values(
        plan.grad_log_std,
        {math::broadcast_term_grad(
            g.continuous_entropy, *denominators.given,
            denominators.weight_sum,
            continuous_entropy_mean_count(*args.log_std))});
  } else {
    grad_log_std = cpu_values(
        plan.grad_log_std,
        {math::mean_term_grad(
            g.continuous_entropy,
            continuous_entropy_mean_count(*args.log_std))});
  }
  at::Tensor grad_entropy_coeff;
  if (!plan.computes_grad_entropy_coeff) {
    grad_entropy_coeff = empty_cpu(plan.grad_entropy_coeff);
  } else if (args.entropy_coeff.dim() == 0) {
    grad_entropy_coeff = cpu_values(
        plan.grad_entropy_coeff, {g.coeff.discrete + g.coeff.continuous});
  } else {
    grad_entropy_coeff = cpu_values(
        plan.grad_entropy_coeff, {g.coeff.discrete, g.coeff.continuous});
  }
  return {grad_logits, grad_log_std, grad_entropy_coeff};
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CPU, m) {
  m.impl("hybrid_entropy_loss", forward_kernel<&hybrid_entropy_loss_cpu>);
  m.impl(
      "_hybrid_entropy_loss_backward",
      backward_kernel<&hybrid_entropy_loss_backward_cpu>);
}

} // namespace cpu
} // namespace hee

// CPU kernels of hybrid_entropy_loss and its backward: the parallel loop over
// row blocks and the deterministic batch reduction. What is not about the
// CPU (checks, output shapes and dtypes, input layout, gradient scales) comes
// from the plan (loss_plan.h); the per-row math runs in the ISA-specific row
// kernels (row_kernels.h).
#include <algorithm>
#include <memory>
#include <optional>
#include <type_traits>
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
// [first_block, end_block), in row order (w_i = 1 without weights).
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
      sum += (weights == nullptr ? 1.0 : weights[i]) * value_of_row(i);
    }
    block_sums[block] = sum;
  }
}

// With normalize_discrete_entropy, the factor of row i's entropy in sub-head
// `head` (math::entropy_normalizer of its allowed actions: those its action
// mask allows, else all of the sub-head's); 1 without normalization.
struct RowNormalizer {
  bool normalizes = false;
  const bool* allowed = nullptr;  // the action mask, laid out for the kernels
  int64_t allowed_row_stride = 0;

  double of(const DiscreteSubHead& head, int64_t i) const {
    if (!normalizes) {
      return 1.0;
    }
    if (allowed == nullptr) {
      return math::entropy_normalizer(head.num_columns);
    }
    const bool* row = allowed + i * allowed_row_stride + head.first_column;
    int64_t count = 0;
    for (int64_t k = 0; k < head.num_columns; ++k) {
      count += row[k] ? 1 : 0;
    }
    return math::entropy_normalizer(count);
  }
};

RowNormalizer row_normalizer(bool normalizes, const OptionalTensor& action_mask) {
  RowNormalizer normalizer;
  normalizer.normalizes = normalizes;
  if (normalizes && action_mask.has_value()) {
    normalizer.allowed = action_mask->const_data_ptr<bool>();
    normalizer.allowed_row_stride = action_mask->stride(0);
  }
  return normalizer;
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


// A parameterized policy's log_std as the passes read it (docs/design.md,
// "Parameterized actions"): rows [B, K * P], or one row [1, K * P] shared by
// the batch.
struct ParameterizedLogStd {
  KernelLogStd log_std;
  int64_t num_actions = 0;  // K
  int64_t num_params = 0;   // P
};

ParameterizedLogStd parameterized_log_std(const at::Tensor& log_std) {
  return {
      parameterized_log_std_for_kernels(log_std), log_std.size(-2),
      log_std.size(-1)};
}

// The action entropies c[i, k] of rows [begin, end) as the kernels read them,
// row `begin` first, in acc (the logits' accumulation type, as every c:
// math::action_entropy_of_sum): computed into `buffer` ([n, K], left
// uninitialized until then: every value is written) from a per-sample
// log_std, or the shared row's K (row stride 0), recomputed per run of rows
// (K sums beside the run's n * K logits).
template <typename acc>
ActionEntropies<acc> action_entropies_of_rows(
    const ParameterizedLogStd& p,
    int64_t begin,
    int64_t end,
    std::unique_ptr<acc[]>& buffer,
    CpuIsa isa) {
  const int64_t K = p.num_actions;
  const int64_t P = p.num_params;
  const bool per_sample = p.log_std.per_sample;
  const int64_t num_rows = per_sample ? end - begin : 1;
  buffer.reset(new acc[num_rows * K]);
  HEE_DISPATCH_FLOATING(p.log_std.rows.scalar_type(), [&] {
    const scalar_t* rows = p.log_std.rows.const_data_ptr<scalar_t>();
    // The rows as one run of num_rows * K actions of P parameters each.
    action_entropies_kernel<scalar_t, acc>(isa)(
        rows + (per_sample ? begin : 0) * K * P, num_rows * K, P,
        buffer.get());
  });
  return {buffer.get(), per_sample ? K : 0};
}

// Row 3 of a parameterized policy's [4, B] row_stats: each row's h_c.
template <typename acc>
acc* expected_action_entropies(const at::Tensor& row_stats) {
  return row_stats.data_ptr<acc>() + 3 * row_stats.size(1);
}

// The statistics and logits of rows [begin, end) of one head, seen from row
// `begin` as row 0.
template <typename acc>
RowStats<acc> stats_from(const RowStats<acc>& stats, int64_t begin) {
  return {stats.shift + begin, stats.log_sum_exp + begin,
          stats.entropy + begin};
}
template <typename scalar_t>
LogitRows<scalar_t> rows_from(LogitRows<scalar_t> rows, int64_t begin) {
  rows.data += begin * rows.row_stride;
  if (rows.allowed != nullptr) {
    rows.allowed += begin * rows.allowed_row_stride;
  }
  return rows;
}

// Batch means of both heads in one parallel pass over row blocks; fills the
// [3, H * B] row statistics on the way (with parameterized actions [4, B],
// row 3 each row's h_c). Each run of blocks visits every
// sub-head's columns while its rows are in cache.
struct BatchMeans {
  std::vector<double> discrete_head_entropies;  // H_h, one per sub-head
  double continuous_entropy = 0.0;
};

BatchMeans forward_pass(
    const OptionalTensor& logits,
    const OptionalTensor& action_mask,
    const std::vector<DiscreteSubHead>& sub_heads,
    const RowNormalizer& normalizer,
    const std::optional<KernelLogStd>& log_std,
    const ParameterizedLogStd* parameterized,
    const std::optional<HostRowWeights>& weights,
    const HostDenominators& denominators,
    const at::Tensor& row_stats,
    CpuIsa isa) {
  const RowPass pass = make_row_pass(logits, log_std);
  const double* w = weights.has_value() ? weights->data() : nullptr;
  const int64_t num_heads =
      logits.has_value() ? static_cast<int64_t>(sub_heads.size()) : 0;
  std::vector<std::vector<double>> block_entropy_sums(
      num_heads, std::vector<double>(pass.num_blocks(), 0.0));
  std::vector<double> block_continuous_sums(pass.num_blocks(), 0.0);
  const bool per_sample_log_std = log_std.has_value() && log_std->per_sample;
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    if (logits.has_value()) {
      HEE_DISPATCH_FLOATING(logits->scalar_type(), [&] {
        using acc = acc_t<scalar_t>;
        const RowStats<acc> all_stats = row_stats_view<acc>(row_stats);
        const int64_t begin = pass.first_row(first_block);
        const int64_t end = pass.end_row(end_block - 1);
        if (parameterized != nullptr) {
          // The statistics and each row's expected action entropy h_c (row 3
          // of row_stats, for the backward) in one call; one head.
          std::unique_ptr<acc[]> entropies_buffer;
          row_kernels<scalar_t>(isa).parameterized_forward(
              rows_from(
                  logit_rows<scalar_t>(*logits, action_mask, sub_heads[0]),
                  begin),
              0, end - begin, stats_from(all_stats, begin),
              action_entropies_of_rows(
                  *parameterized, begin, end, entropies_buffer, isa),
              expected_action_entropies<acc>(row_stats) + begin);
        }
        for (int64_t h = 0; h < num_heads; ++h) {
          const RowStats<acc> stats =
              sub_head_stats(all_stats, h, pass.batch);
          if (parameterized == nullptr) {
            row_kernels<scalar_t>(isa).forward(
                logit_rows<scalar_t>(*logits, action_mask, sub_heads[h]),
                begin, end, stats, TakenLogProbs<acc>{});
          }
          if (normalizer.normalizes) {
            const DiscreteSubHead& head = sub_heads[h];
            for (int64_t block = first_block; block < end_block; ++block) {
              double sum = 0.0;
              for (int64_t i = pass.first_row(block); i < pass.end_row(block);
                   ++i) {
                sum += (w == nullptr ? 1.0 : w[i]) * normalizer.of(head, i) *
                    static_cast<double>(stats.entropy[i]);
              }
              block_entropy_sums[h][block] = sum;
            }
          } else if (w == nullptr) {
            pass.sum_each_block(
                row_kernels<acc>(isa).sum, stats.entropy,
                /*values_per_row=*/1, first_block, end_block,
                block_entropy_sums[h]);
          } else {
            weighted_sum_each_block(
                pass, w, first_block, end_block,
                [&](int64_t i) {
                  return static_cast<double>(stats.entropy[i]);
                },
                block_entropy_sums[h]);
          }
        }
        if (parameterized != nullptr) {
          const acc* expected = expected_action_entropies<acc>(row_stats);
          weighted_sum_each_block(
              pass, w, first_block, end_block,
              [&](int64_t i) { return static_cast<double>(expected[i]); },
              block_continuous_sums);
        }
      });
    }
    if (per_sample_log_std && parameterized == nullptr) {
      const at::Tensor& rows = log_std->rows;
      HEE_DISPATCH_FLOATING(rows.scalar_type(), [&] {
        const auto sum = row_kernels<scalar_t>(isa).sum;
        const scalar_t* values = rows.const_data_ptr<scalar_t>();
        const int64_t dims = rows.size(1);
        if (w == nullptr) {
          pass.sum_each_block(
              sum, values, dims, first_block, end_block, block_continuous_sums);
        } else {
          weighted_sum_each_block(
              pass, w, first_block, end_block,
              [&](int64_t i) {
                return static_cast<double>(sum(values + i * dims, dims));
              },
              block_continuous_sums);
        }
      });
    }
  });

  const double denominator = denominators.of_rows();
  BatchMeans means;
  for (int64_t h = 0; h < num_heads; ++h) {
    means.discrete_head_entropies.push_back(
        ordered_sum(block_entropy_sums[h]) / denominator);
  }
  if (parameterized != nullptr) {
    means.continuous_entropy = ordered_sum(block_continuous_sums) / denominator;
  } else if (log_std.has_value()) {
    const double num_dims = static_cast<double>(log_std->rows.size(1));
    if (denominators.given.has_value()) {
      means.continuous_entropy = math::gaussian_entropy_over(
          per_sample_log_std ? ordered_sum(block_continuous_sums)
                             : sum_all(log_std->rows, isa),
          !per_sample_log_std, denominators.weight_sum, num_dims, denominator);
    } else {
      const double mean_sum_log_std = per_sample_log_std
          ? ordered_sum(block_continuous_sums) / denominator
          : sum_all(log_std->rows, isa);
      means.continuous_entropy =
          math::gaussian_entropy(mean_sum_log_std, num_dims);
    }
  }
  return means;
}

LossForwardOutputs hybrid_entropy_loss_cpu(const LossForwardArgs& args) {
  const LossForwardPlan plan = plan_loss_forward(args);
  const CpuIsa isa = selected_cpu_isa();
  const OptionalTensor logits = plan.has_discrete
      ? OptionalTensor(logits_for_kernels(*args.logits))
      : std::nullopt;
  const std::optional<ParameterizedLogStd> parameterized =
      plan.has_parameterized_actions
      ? std::optional<ParameterizedLogStd>(
            parameterized_log_std(*args.log_std))
      : std::nullopt;
  const std::optional<KernelLogStd> log_std = parameterized.has_value()
      ? std::optional<KernelLogStd>(parameterized->log_std)
      : plan.has_continuous
      ? std::optional<KernelLogStd>(log_std_for_kernels(*args.log_std))
      : std::nullopt;
  at::Tensor row_stats = empty_cpu(plan.row_stats);
  const std::optional<HostRowWeights> weights =
      host_row_weights(args.row_weights);
  const std::vector<DiscreteSubHead> sub_heads = plan.has_discrete
      ? discrete_sub_heads(args.hyperparameters, logits->size(1))
      : std::vector<DiscreteSubHead>{};
  const OptionalTensor action_mask = action_mask_for_kernels(args.action_mask);
  const BatchMeans means = forward_pass(
      logits, action_mask, sub_heads,
      row_normalizer(
          args.hyperparameters.normalize_discrete_entropy, action_mask),
      log_std, parameterized.has_value() ? &*parameterized : nullptr, weights,
      host_denominators(
          args.mean_denominator, weights, args.logits, args.log_std),
      row_stats, isa);

  const math::HeadCoefficients coeff =
      read_host_coefficients(args.entropy_coeff);
  math::LossComponents c;
  at::Tensor discrete_entropy_per_head = empty_cpu(plan.discrete_entropy_per_head);
  if (!plan.has_sub_heads) {
    c = math::combine_losses(
        coeff, plan.has_discrete,
        plan.has_discrete ? means.discrete_head_entropies[0] : 0.0,
        plan.has_continuous, means.continuous_entropy, args.params());
  } else {
    const math::LossParams params = args.params();
    double discrete_entropy = means.discrete_head_entropies[0];
    for (size_t h = 1; h < sub_heads.size(); ++h) {
      discrete_entropy += means.discrete_head_entropies[h];
    }
    double discrete_penalty = 0.0;
    for (size_t h = 0; h < sub_heads.size(); ++h) {
      discrete_penalty += math::sub_head_penalty(
          params.penalty_multiplier, sub_heads[h].threshold.has_value(),
          sub_heads[h].threshold.value_or(0.0),
          means.discrete_head_entropies[h]);
    }
    c = math::with_discrete_penalty(
        math::combine_losses(
            coeff, true, discrete_entropy, plan.has_continuous,
            means.continuous_entropy,
            kernel_loss_params(args.hyperparameters, params)),
        discrete_penalty);
    HEE_DISPATCH_FLOATING(plan.discrete_entropy_per_head.dtype, [&] {
      scalar_t* out = discrete_entropy_per_head.mutable_data_ptr<scalar_t>();
      for (size_t h = 0; h < sub_heads.size(); ++h) {
        out[h] = static_cast<scalar_t>(means.discrete_head_entropies[h]);
      }
    });
  }
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
          row_stats,
          discrete_entropy_per_head};
}

// The logits gradient, in one parallel pass over row blocks: each
// sub-head's mean's gradient over its denominator (grad_of_head_means[h]),
// and with row weights or normalizers, times each row's own (the row
// kernels' per-row scales). Each sub-head's gradient goes into its columns
// of the rows (the kernels' output row stride is the logits' width).
void backward_pass(
    const at::Tensor& logits,
    const OptionalTensor& action_mask,
    const std::vector<DiscreteSubHead>& sub_heads,
    const RowNormalizer& normalizer,
    const at::Tensor& row_stats,
    const std::vector<double>& grad_of_head_means,
    const std::optional<HostRowWeights>& weights,
    double denominator,
    const at::Tensor& grad_logits,
    CpuIsa isa) {
  const RowPass pass{logits.size(0), logits.size(1)};
  const int64_t num_cols = logits.size(1);
  const double* w = weights.has_value() ? weights->data() : nullptr;
  // Row weights or normalizers make each row's gradient scale its own.
  const bool scales_rows = w != nullptr || normalizer.normalizes;
  const at::Tensor row_scales = !scales_rows
      ? at::Tensor()
      : at::empty({pass.batch}, logits.options().dtype(row_stats.scalar_type()));
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    HEE_DISPATCH_FLOATING(logits.scalar_type(), [&] {
      using acc = acc_t<scalar_t>;
      const int64_t begin = pass.first_row(first_block);
      const int64_t end = pass.end_row(end_block - 1);
      const RowStats<acc> all_stats = row_stats_view<acc>(row_stats);
      scalar_t* grad = grad_logits.data_ptr<scalar_t>();
      for (size_t h = 0; h < sub_heads.size(); ++h) {
        const DiscreteSubHead& head = sub_heads[h];
        const double grad_per_term =
            math::mean_term_grad(grad_of_head_means[h], denominator);
        const int64_t n = end - begin;
        const RowStats<acc> stats = stats_from(
            sub_head_stats(all_stats, static_cast<int64_t>(h), pass.batch),
            begin);
        const LogitRows<scalar_t> rows =
            rows_from(logit_rows<scalar_t>(logits, action_mask, head), begin);
        // The run's rows from 0, as the stats and the logits above.
        scalar_t* out = grad + begin * num_cols + head.first_column;
        acc* row_scale = nullptr;
        if (scales_rows) {
          row_scale = row_scales.data_ptr<acc>() + begin;
          for (int64_t i = 0; i < n; ++i) {
            const double weight = (w == nullptr ? 1.0 : w[begin + i]) *
                normalizer.of(head, begin + i);
            row_scale[i] =
                static_cast<acc>(math::weighted_term_grad(grad_per_term, weight));
          }
        }
        row_kernels<scalar_t>(isa).backward(
            rows, 0, n, stats, static_cast<acc>(grad_per_term), out,
            num_cols, row_scale);
      }
    });
  });
}

// Rows [begin, begin + n) of a per-sample parameterized log_std's gradient,
// one value per action (its storage [B, K] under strides [K, 1, 0]): the
// row's a p[k] (d h_c / d c[k] = p[k], and c[k] is the sum of the action's
// log-stds, so each of its P parameters gets the same).
template <typename acc>
void write_per_sample_action_grads(
    const acc* grad_action_entropies,
    int64_t begin,
    int64_t n,
    int64_t num_actions,
    const at::Tensor& grad_log_std) {
  HEE_DISPATCH_FLOATING(grad_log_std.scalar_type(), [&] {
    scalar_t* out = grad_log_std.data_ptr<scalar_t>() + begin * num_actions;
    for (int64_t e = 0; e < n * num_actions; ++e) {
      out[e] = static_cast<scalar_t>(grad_action_entropies[e]);
    }
  });
}

// The gradients of a parameterized policy (docs/design.md, "Parameterized
// actions"), in one parallel pass over row blocks: one sweep of each run's
// logits writes their gradient of g h + a h_c (h_c saved by the forward) and
// each row's a p[k], log_std's gradient (one value for an action's P
// parameters, seen broadcast along P): each row's for a per-sample log_std,
// or, for a shared [K, P], summed over each block's rows and then over the
// blocks in order (the same bits whatever the number of threads).
// grad_logits and grad_log_std are null where not computed.
void parameterized_backward_pass(
    const at::Tensor& logits,
    const OptionalTensor& action_mask,
    const DiscreteSubHead& head,
    const RowNormalizer& normalizer,
    const at::Tensor& row_stats,
    const ParameterizedLogStd& parameterized,
    double grad_of_discrete_mean,
    double grad_of_continuous_mean,
    const std::optional<HostRowWeights>& weights,
    double denominator,
    const at::Tensor* grad_logits,
    const at::Tensor* grad_log_std,
    CpuIsa isa) {
  const int64_t K = logits.size(1);
  const int64_t P = parameterized.num_params;
  const RowPass pass{logits.size(0), K * (1 + P)};
  const double* w = weights.has_value() ? weights->data() : nullptr;
  const double discrete_per_term =
      math::mean_term_grad(grad_of_discrete_mean, denominator);
  const double continuous_per_term =
      math::mean_term_grad(grad_of_continuous_mean, denominator);
  const bool shares_log_std = !parameterized.log_std.per_sample;
  std::vector<std::vector<double>> block_action_grads(
      shares_log_std && grad_log_std != nullptr ? pass.num_blocks() : 0,
      std::vector<double>(K, 0.0));
  pass.for_each_run([&](int64_t first_block, int64_t end_block) {
    HEE_DISPATCH_FLOATING(logits.scalar_type(), [&] {
      using acc = acc_t<scalar_t>;
      const int64_t begin = pass.first_row(first_block);
      const int64_t n = pass.end_row(end_block - 1) - begin;
      const RowStats<acc> stats =
          stats_from(row_stats_view<acc>(row_stats), begin);
      const LogitRows<scalar_t> rows =
          rows_from(logit_rows<scalar_t>(logits, action_mask, head), begin);
      std::unique_ptr<acc[]> entropies_buffer;
      const ActionEntropies<acc> entropies = action_entropies_of_rows(
          parameterized, begin, begin + n, entropies_buffer, isa);
      std::vector<acc> grad_entropy(n);
      std::vector<acc> grad_expected(n);
      for (int64_t i = 0; i < n; ++i) {
        const double weight = w == nullptr ? 1.0 : w[begin + i];
        grad_entropy[i] = static_cast<acc>(math::weighted_term_grad(
            discrete_per_term, weight * normalizer.of(head, begin + i)));
        grad_expected[i] = static_cast<acc>(
            math::weighted_term_grad(continuous_per_term, weight));
      }
      const ParameterizedGrads<acc> grads{
          grad_entropy.data(), grad_expected.data(),
          expected_action_entropies<acc>(row_stats) + begin};
      scalar_t* grad = grad_logits == nullptr
          ? nullptr
          : grad_logits->data_ptr<scalar_t>() + begin * K;
      const auto kernel = row_kernels<scalar_t>(isa).parameterized_backward;
      if (grad_log_std == nullptr) {
        kernel(rows, 0, n, stats, entropies, grads, grad, K, {nullptr, K});
        return;
      }
      if (!shares_log_std) {
        // Straight into the gradient where it has the accumulation dtype.
        const bool writes_in_place =
            grad_log_std->scalar_type() == c10::CppTypeToScalarType<acc>::value;
        std::vector<acc> buffer(writes_in_place ? 0 : n * K);
        acc* grad_action_entropies = writes_in_place
            ? grad_log_std->data_ptr<acc>() + begin * K
            : buffer.data();
        kernel(rows, 0, n, stats, entropies, grads, grad, K,
               {grad_action_entropies, K});
        if (!writes_in_place) {
          write_per_sample_action_grads(
              grad_action_entropies, begin, n, K, *grad_log_std);
        }
        return;
      }
      // One call per block, each summing its rows' a p[k].
      std::vector<acc> block_sums(K);
      for (int64_t block = first_block; block < end_block; ++block) {
        std::fill(block_sums.begin(), block_sums.end(), acc(0));
        kernel(rows, pass.first_row(block) - begin, pass.end_row(block) - begin,
               stats, entropies, grads, grad, K, {block_sums.data(), 0});
        block_action_grads[block].assign(block_sums.begin(), block_sums.end());
      }
    });
  });
  if (!shares_log_std || grad_log_std == nullptr) {
    return;
  }
  HEE_DISPATCH_FLOATING(grad_log_std->scalar_type(), [&] {
    // One value per action (storage [K] under strides [1, 0]).
    scalar_t* out = grad_log_std->data_ptr<scalar_t>();
    for (int64_t k = 0; k < K; ++k) {
      double sum = 0.0;
      for (const std::vector<double>& sums : block_action_grads) {
        sum += sums[k];
      }
      out[k] = static_cast<scalar_t>(sum);
    }
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

// The coefficient's gradient: one value for a 0-dim coefficient (both heads'
// terms), one per head for a [2].
at::Tensor grad_entropy_coeff_of(
    const LossBackwardPlan& plan,
    const at::Tensor& entropy_coeff,
    const math::BatchEntropyGrads& g) {
  if (!plan.computes_grad_entropy_coeff) {
    return empty_cpu(plan.grad_entropy_coeff);
  }
  if (entropy_coeff.dim() == 0) {
    return cpu_values(
        plan.grad_entropy_coeff, {g.coeff.discrete + g.coeff.continuous});
  }
  return cpu_values(
      plan.grad_entropy_coeff, {g.coeff.discrete, g.coeff.continuous});
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
  const bool has_sub_heads = args.hyperparameters.discrete_sizes.has_value();
  const math::LossParams params = args.params();
  const math::BatchEntropyGrads g = math::combine_losses_backward(
      read_host_coefficients(args.entropy_coeff), plan.has_discrete,
      read_host_value(args.discrete_entropy), plan.has_continuous,
      read_host_value(args.continuous_entropy),
      kernel_loss_params(args.hyperparameters, params), upstream);

  const std::optional<HostRowWeights> weights =
      host_row_weights(args.row_weights);
  const HostDenominators denominators = host_denominators(
      args.mean_denominator, weights, args.logits, args.log_std);
  at::Tensor grad_logits = empty_cpu(plan.grad_logits);
  if (plan.has_parameterized_actions) {
    at::Tensor grad_log_std = empty_cpu(plan.grad_log_std);
    if (plan.computes_grad_logits || plan.computes_grad_log_std) {
      const OptionalTensor action_mask =
          action_mask_for_kernels(args.action_mask);
      const CpuIsa isa = selected_cpu_isa();
      parameterized_backward_pass(
          logits_for_kernels(*args.logits), action_mask,
          discrete_sub_heads(args.hyperparameters, args.logits->size(1))[0],
          row_normalizer(
              args.hyperparameters.normalize_discrete_entropy, action_mask),
          args.row_stats, parameterized_log_std(*args.log_std),
          g.discrete_entropy, g.continuous_entropy, weights,
          denominators.of_rows(),
          plan.computes_grad_logits ? &grad_logits : nullptr,
          plan.computes_grad_log_std ? &grad_log_std : nullptr, isa);
    }
    return {grad_logits, grad_log_std,
            grad_entropy_coeff_of(plan, args.entropy_coeff, g)};
  }
  if (plan.computes_grad_logits) {
    const std::vector<DiscreteSubHead> sub_heads =
        discrete_sub_heads(args.hyperparameters, args.logits->size(1));
    // d total / d H_h: g.discrete_entropy without sub-heads; with them, what
    // every sub-head gets through H_d plus its own penalty's gradient.
    std::vector<double> grad_of_head_means(sub_heads.size(), g.discrete_entropy);
    if (has_sub_heads) {
      for (size_t h = 0; h < sub_heads.size(); ++h) {
        grad_of_head_means[h] = math::sub_head_entropy_grad(
            g.discrete_entropy, params.penalty_multiplier,
            sub_heads[h].threshold.has_value(),
            sub_heads[h].threshold.value_or(0.0),
            read_host_value(args.discrete_entropy_per_head,
                            static_cast<int64_t>(h) *
                                args.discrete_entropy_per_head.stride(0)),
            upstream);
      }
    }
    const OptionalTensor action_mask = action_mask_for_kernels(args.action_mask);
    backward_pass(
        logits_for_kernels(*args.logits), action_mask, sub_heads,
        row_normalizer(
            args.hyperparameters.normalize_discrete_entropy, action_mask),
        args.row_stats,
        grad_of_head_means, weights, denominators.of_rows(), grad_logits,
        selected_cpu_isa());
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
  return {grad_logits, grad_log_std,
          grad_entropy_coeff_of(plan, args.entropy_coeff, g)};
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

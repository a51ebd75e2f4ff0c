// CPU kernels of log_prob_and_entropy and its backward: a parallel loop over
// runs of rows that the mask keeps, each run handed to the ISA's row kernels
// (row_kernels.h). Rows are independent: no reduction, so any split of the
// rows among threads gives bitwise the same results. What is not about the
// CPU (checks, shapes, dtypes, the rows' layout) comes from token_terms_plan.h.
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../token_terms_op.h"
#include "../token_terms_plan.h"
#include "cpu_tensors.h"
#include "isa.h"
#include "row_kernel_table.h"

namespace hee {
namespace cpu {
namespace {

// Calls body(begin, end) on rows [first, last) in parallel, in chunks of
// whole rows of about kMinElementsPerTask elements or more.
template <typename Body>
void for_row_chunks(int64_t num_rows, int64_t num_cols, const Body& body) {
  const int64_t grain =
      std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(num_cols, 1));
  at::parallel_for(0, num_rows, grain, body);
}

// Calls kept(run_begin, run_end) for each run of rows the mask keeps in
// [begin, end) and dropped(i) for each row it drops (every row kept without
// a mask).
template <typename Kept, typename Dropped>
void for_each_run(
    const bool* mask, int64_t begin, int64_t end, const Kept& kept,
    const Dropped& dropped) {
  if (mask == nullptr) {
    kept(begin, end);
    return;
  }
  int64_t i = begin;
  while (i < end) {
    if (!mask[i]) {
      dropped(i++);
      continue;
    }
    const int64_t run_begin = i;
    while (i < end && mask[i]) {
      ++i;
    }
    kept(run_begin, i);
  }
}

// The position of flat row `row` in the leading shape, as "[i, j]".
std::string position(int64_t row, at::IntArrayRef leading_sizes) {
  std::vector<int64_t> index(leading_sizes.size());
  for (int64_t d = static_cast<int64_t>(leading_sizes.size()) - 1; d >= 0; --d) {
    index[d] = row % leading_sizes[d];
    row /= leading_sizes[d];
  }
  std::ostringstream out;
  out << at::IntArrayRef(index);
  return out.str();
}

// Raises an IndexError naming the first action of a kept row in [begin, end)
// outside [0, num_cols). The common case, every action valid, is one pass
// without an early exit, which the compiler vectorizes.
void check_actions(
    const int64_t* actions, const bool* mask, int64_t begin, int64_t end,
    int64_t num_cols, at::IntArrayRef leading_sizes, const char* op) {
  const auto outside = [&](int64_t i) {
    return static_cast<uint64_t>(actions[i]) >= static_cast<uint64_t>(num_cols);
  };
  bool any_outside = false;
  if (mask == nullptr) {
    for (int64_t i = begin; i < end; ++i) {
      any_outside |= outside(i);
    }
  } else {
    for (int64_t i = begin; i < end; ++i) {
      any_outside |= mask[i] & outside(i);
    }
  }
  if (!any_outside) {
    return;
  }
  for (int64_t i = begin; i < end; ++i) {
    TORCH_CHECK_INDEX(
        (mask != nullptr && !mask[i]) || !outside(i), op, ": actions",
        position(i, leading_sizes), " = ", actions[i], " is outside [0, ",
        num_cols, ") (K = ", num_cols, " actions)");
  }
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename scalar_t>
LogitRows<scalar_t> logit_rows_of(const TokenRows& rows) {
  return {
      rows.logits.const_data_ptr<scalar_t>(), rows.logits.stride(0),
      rows.num_cols(), static_cast<acc_t<scalar_t>>(rows.scale),
      data_or_null<bool>(rows.action_mask),
      rows.action_mask.defined() ? rows.action_mask.stride(0) : 0};
}

TokenTermsOutputs log_prob_and_entropy_cpu(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask) {
  const TokenTermsForwardPlan plan = plan_token_terms_forward(
      logits, actions, mask, temperature, action_mask);
  at::Tensor log_prob = empty_cpu(plan.log_prob);
  at::Tensor entropy = empty_cpu(plan.entropy);
  at::Tensor row_stats = empty_cpu(plan.row_stats);
  const TokenRows rows = token_rows_for_kernels(
      logits, actions, mask, temperature, action_mask);
  const CpuIsa isa = selected_cpu_isa();
  const at::IntArrayRef leading_sizes = logits.sizes().slice(0, logits.dim() - 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "log_prob_and_entropy",
      [&] {
        using acc = acc_t<scalar_t>;
        const auto forward = row_kernels<scalar_t>(isa).forward;
        const LogitRows<scalar_t> logit_rows = logit_rows_of<scalar_t>(rows);
        const RowStats<acc> stats = row_stats_view<acc>(row_stats);
        const int64_t* taken = data_or_null<int64_t>(rows.actions);
        const bool* kept = data_or_null<bool>(rows.mask);
        const TakenLogProbs<acc> taken_log_probs{
            taken, plan.has_actions ? log_prob.data_ptr<acc>() : nullptr};
        acc* entropy_out = entropy.data_ptr<acc>();
        for_row_chunks(rows.num_rows(), rows.num_cols(), [&](int64_t begin, int64_t end) {
          if (taken != nullptr) {
            check_actions(
                taken, kept, begin, end, rows.num_cols(), leading_sizes,
                "log_prob_and_entropy");
          }
          for_each_run(
              kept, begin, end,
              [&](int64_t run_begin, int64_t run_end) {
                forward(logit_rows, run_begin, run_end, stats, taken_log_probs);
                std::copy(
                    stats.entropy + run_begin, stats.entropy + run_end,
                    entropy_out + run_begin);
              },
              [&](int64_t i) {
                stats.shift[i] = stats.log_sum_exp[i] = stats.entropy[i] = 0;
                entropy_out[i] = 0;
                if (taken_log_probs.log_prob != nullptr) {
                  taken_log_probs.log_prob[i] = 0;
                }
              });
        });
      });
  return {log_prob, entropy, row_stats};
}

at::Tensor log_prob_and_entropy_backward_cpu(
    const OptionalTensor& grad_log_prob,
    const OptionalTensor& grad_entropy,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    const at::Tensor& row_stats,
    double temperature,
    const OptionalTensor& action_mask) {
  const TensorSpec spec = plan_token_terms_backward(
      grad_log_prob, grad_entropy, logits, actions, mask, row_stats,
      temperature, action_mask);
  at::Tensor grad_logits = empty_cpu(spec);
  const TokenRows rows = token_rows_for_kernels(
      logits, actions, mask, temperature, action_mask);
  const CpuIsa isa = selected_cpu_isa();
  const at::IntArrayRef leading_sizes = logits.sizes().slice(0, logits.dim() - 1);
  const at::ScalarType acc_dtype = row_stats.scalar_type();
  const at::Tensor grad_entropy_rows = per_row_grad(
      grad_entropy, rows.num_rows(), rows.scale, acc_dtype, logits.device());
  const at::Tensor grad_log_prob_rows = grad_log_prob.has_value()
      ? per_row_grad(grad_log_prob, rows.num_rows(), rows.scale, acc_dtype,
                     logits.device())
      : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(),
      "_log_prob_and_entropy_backward", [&] {
        using acc = acc_t<scalar_t>;
        const auto token_backward = row_kernels<scalar_t>(isa).token_backward;
        const LogitRows<scalar_t> logit_rows = logit_rows_of<scalar_t>(rows);
        const RowStats<acc> stats = row_stats_view<acc>(row_stats);
        // The taken action matters only with a log_prob gradient.
        const int64_t* taken = grad_log_prob_rows.defined()
            ? data_or_null<int64_t>(rows.actions)
            : nullptr;
        const TokenGrads<acc> grads{
            grad_entropy_rows.const_data_ptr<acc>(),
            data_or_null<acc>(grad_log_prob_rows), taken};
        const bool* kept = data_or_null<bool>(rows.mask);
        scalar_t* out = grad_logits.data_ptr<scalar_t>();
        const int64_t K = rows.num_cols();
        for_row_chunks(rows.num_rows(), K, [&](int64_t begin, int64_t end) {
          if (taken != nullptr) {
            check_actions(
                taken, kept, begin, end, K, leading_sizes,
                "_log_prob_and_entropy_backward");
          }
          for_each_run(
              kept, begin, end,
              [&](int64_t run_begin, int64_t run_end) {
                token_backward(
                    logit_rows, run_begin, run_end, stats, grads, out, K);
              },
              [&](int64_t i) { std::fill(out + i * K, out + (i + 1) * K, scalar_t(0)); });
        });
      });
  return grad_logits;
}

} // namespace

TORCH_LIBRARY_IMPL(hybrid_entropy_ext, CPU, m) {
  m.impl("log_prob_and_entropy", &log_prob_and_entropy_cpu);
  m.impl("_log_prob_and_entropy_backward", &log_prob_and_entropy_backward_cpu);
}

} // namespace cpu
} // namespace hee

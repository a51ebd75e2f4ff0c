// CPU kernels of log_prob_and_entropy and its backward: a parallel loop over
// runs of rows that the mask keeps, each run handed to the ISA's row kernels
// (row_kernels.h). Rows are independent: no reduction, so any split of the
// rows among threads gives bitwise the same results. What is not about the
// CPU (checks, shapes, dtypes, the rows' layout) comes from token_terms_plan.h.
#include <sstream>
#include <vector>

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

// With sub-heads, each head's kernels run on at most this many rows before the
// next head's, so that the rows are still in cache for the next head (as the
// hybrid loss's runs of row blocks, hybrid_entropy_cpu.cpp); one head takes a
// whole run at once.
constexpr int64_t kSubHeadPieceRows = 1024;

// Calls body(begin, end) on consecutive pieces of [begin, end): of at most
// kSubHeadPieceRows rows with several sub-heads, the whole range with one.
template <typename Body>
void for_each_piece(int64_t begin, int64_t end, size_t num_heads, const Body& body) {
  const int64_t piece_rows = num_heads > 1 ? kSubHeadPieceRows : end - begin;
  for (int64_t piece = begin; piece < end; piece += piece_rows) {
    body(piece, std::min(end, piece + piece_rows));
  }
}

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

// Where an action sits in the actions tensor: flat row `row` in the leading
// shape and, with sub-heads, the sub-head's index last, as "[i, j]" or
// "[i, j, h]".
struct ActionPosition {
  at::IntArrayRef leading_sizes;
  bool has_sub_heads = false;
  int64_t head = 0;

  std::string of_row(int64_t row) const {
    std::vector<int64_t> index(leading_sizes.size());
    for (int64_t d = static_cast<int64_t>(leading_sizes.size()) - 1; d >= 0; --d) {
      index[d] = row % leading_sizes[d];
      row /= leading_sizes[d];
    }
    if (has_sub_heads) {
      index.push_back(head);
    }
    std::ostringstream out;
    out << at::IntArrayRef(index);
    return out.str();
  }
};

// Raises an IndexError naming the first action of a kept row in [begin, end)
// outside [0, num_cols), row i's at actions[i * stride], if there is one.
void check_actions(
    const int64_t* actions, int64_t stride, const bool* mask, int64_t begin,
    int64_t end, int64_t num_cols, const ActionPosition& where, const char* op) {
  const auto outside = [&](int64_t i) {
    return static_cast<uint64_t>(actions[i * stride]) >=
        static_cast<uint64_t>(num_cols);
  };
  for (int64_t i = begin; i < end; ++i) {
    TORCH_CHECK_INDEX(
        (mask != nullptr && !mask[i]) || !outside(i), op, ": actions",
        where.of_row(i), " = ", actions[i * stride], " is outside [0, ", num_cols,
        ") (", where.has_sub_heads ? "sub-head " + std::to_string(where.head) + " has K_h"
                                   : std::string("K"),
        " = ", num_cols, " actions)");
  }
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename T>
T* data_or_null_mutable(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

// Each sub-head's columns of the tempered rows, in head order.
template <typename scalar_t>
std::vector<LogitRows<scalar_t>> head_rows(const TokenRows& rows) {
  const OptionalTensor action_mask = rows.action_mask.defined()
      ? OptionalTensor(rows.action_mask)
      : std::nullopt;
  std::vector<LogitRows<scalar_t>> heads;
  heads.reserve(rows.heads.size());
  for (const DiscreteSubHead& head : rows.heads) {
    heads.push_back(logit_rows<scalar_t>(rows.logits, action_mask, head));
    heads.back().scale = static_cast<acc_t<scalar_t>>(rows.scale);
  }
  return heads;
}

// Sub-head h's first action (column h of [N, H], row stride H), null
// without actions.
const int64_t* head_actions(const TokenRows& rows, size_t h) {
  return rows.actions.defined() ? rows.actions.const_data_ptr<int64_t>() + h
                                : nullptr;
}

// Rows whose actions' bounds action_bounds_tile lays out side by side.
constexpr int64_t kBoundsTileRows = 16;

// K_h - 1 of each action of kBoundsTileRows whole rows of [N, H] actions
// (the last_action of row r's sub-head h at r * H + h), so that an action and
// its bound share one index in any_action_outside. Built once per call.
std::vector<uint64_t> action_bounds_tile(const TokenRows& rows) {
  const int64_t H = rows.num_action_columns();
  std::vector<uint64_t> last_actions(kBoundsTileRows * H);
  for (int64_t j = 0; j < kBoundsTileRows * H; ++j) {
    last_actions[j] =
        static_cast<uint64_t>(rows.heads[j % H].num_columns - 1);
  }
  return last_actions;
}

// Whether an action of the kept rows of [begin, end) lies outside its
// sub-head's [0, K_h), in one pass over the rows' [N, H] actions. Each action
// a is tested by the top bit of a | (K_h - 1 - a) in uint64 arithmetic (set
// exactly when a < 0 or a > K_h - 1), ORed over the actions: no compare or
// branch per action, so the compiler vectorizes the loop (both passes check
// every action, as many as the rows times H). `last` is action_bounds_tile's.
bool any_action_outside(
    const TokenRows& rows, const uint64_t* last, const bool* kept,
    int64_t begin, int64_t end) {
  const int64_t H = rows.num_action_columns();
  const uint64_t* actions = reinterpret_cast<const uint64_t*>(
      rows.actions.const_data_ptr<int64_t>());
  uint64_t outside_bits = 0;
  const auto check_rows = [&](int64_t first, int64_t end_row) {
    const uint64_t* run = actions + first * H;
    const int64_t n = (end_row - first) * H;
    for (int64_t tile = 0; tile < n; tile += kBoundsTileRows * H) {
      const uint64_t* a = run + tile;
      const int64_t m = std::min(kBoundsTileRows * H, n - tile);
      for (int64_t j = 0; j < m; ++j) {
        outside_bits |= a[j] | (last[j] - a[j]);
      }
    }
  };
  for_each_run(kept, begin, end, check_rows, [](int64_t) {});
  return (outside_bits >> 63) != 0;
}

// Checks the actions of each sub-head in the kept rows of [begin, end),
// naming the first outside its sub-head's range; `bounds` is
// action_bounds_tile's.
void check_head_actions(
    const TokenRows& rows, const std::vector<uint64_t>& bounds,
    const bool* kept, int64_t begin, int64_t end,
    at::IntArrayRef leading_sizes, const char* op) {
  if (!any_action_outside(rows, bounds.data(), kept, begin, end)) {
    return;
  }
  for (size_t h = 0; h < rows.heads.size(); ++h) {
    const ActionPosition where{
        leading_sizes, rows.has_sub_heads,
        static_cast<int64_t>(h)};
    check_actions(
        head_actions(rows, h), rows.num_action_columns(), kept, begin, end,
        rows.heads[h].num_columns, where, op);
  }
}

TokenTermsOutputs log_prob_and_entropy_cpu(
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  const TokenTermsForwardPlan plan = plan_token_terms_forward(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  at::Tensor log_prob = empty_cpu(plan.log_prob);
  at::Tensor entropy = empty_cpu(plan.entropy);
  at::Tensor row_stats = empty_cpu(plan.row_stats);
  const TokenRows rows = token_rows_for_kernels(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  const CpuIsa isa = selected_cpu_isa();
  const std::vector<uint64_t> action_bounds = action_bounds_tile(rows);
  const at::IntArrayRef leading_sizes = logits.sizes().slice(0, logits.dim() - 1);
  const int64_t N = rows.num_rows();
  const size_t num_heads = rows.heads.size();
  // Sub-heads after the first write their log-probabilities here, then add
  // them to the first's (each thread to its own rows).
  const at::Tensor head_log_prob = plan.has_actions && num_heads > 1
      ? at::empty({N}, log_prob.options())
      : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "log_prob_and_entropy",
      [&] {
        using acc = acc_t<scalar_t>;
        const auto forward = row_kernels<scalar_t>(isa).forward;
        const std::vector<LogitRows<scalar_t>> heads = head_rows<scalar_t>(rows);
        const RowStats<acc> all_stats = row_stats_view<acc>(row_stats);
        const bool* kept = data_or_null<bool>(rows.mask);
        acc* log_prob_out = plan.has_actions ? log_prob.data_ptr<acc>() : nullptr;
        acc* head_log_prob_out = data_or_null_mutable<acc>(head_log_prob);
        acc* entropy_out = entropy.data_ptr<acc>();
        for_row_chunks(N, rows.num_cols(), [&](int64_t begin, int64_t end) {
          if (plan.has_actions) {
            check_head_actions(
                rows, action_bounds, kept, begin, end, leading_sizes,
                "log_prob_and_entropy");
          }
          for_each_run(
              kept, begin, end,
              [&](int64_t run_begin, int64_t run_end) {
                for_each_piece(run_begin, run_end, num_heads, [&](int64_t first, int64_t last) {
                  for (size_t h = 0; h < num_heads; ++h) {
                    const RowStats<acc> stats =
                        sub_head_stats(all_stats, static_cast<int64_t>(h), N);
                    const TakenLogProbs<acc> taken{
                        head_actions(rows, h),
                        h == 0 ? log_prob_out : head_log_prob_out,
                        rows.num_action_columns()};
                    forward(heads[h], first, last, stats, taken);
                    if (h == 0) {
                      std::copy(
                          stats.entropy + first, stats.entropy + last,
                          entropy_out + first);
                      continue;
                    }
                    // A sample's terms are its sub-heads' sums, in head order
                    // (SB3's MultiCategorical).
                    for (int64_t i = first; i < last; ++i) {
                      entropy_out[i] += stats.entropy[i];
                    }
                    if (log_prob_out != nullptr) {
                      for (int64_t i = first; i < last; ++i) {
                        log_prob_out[i] += head_log_prob_out[i];
                      }
                    }
                  }
                });
              },
              [&](int64_t i) {
                for (size_t h = 0; h < num_heads; ++h) {
                  const RowStats<acc> stats =
                      sub_head_stats(all_stats, static_cast<int64_t>(h), N);
                  stats.shift[i] = stats.log_sum_exp[i] = stats.entropy[i] = 0;
                }
                entropy_out[i] = 0;
                if (log_prob_out != nullptr) {
                  log_prob_out[i] = 0;
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
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes) {
  const TensorSpec spec = plan_token_terms_backward(
      grad_log_prob, grad_entropy, logits, actions, mask, row_stats,
      temperature, action_mask, discrete_sizes);
  at::Tensor grad_logits = empty_cpu(spec);
  const TokenRows rows = token_rows_for_kernels(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  const CpuIsa isa = selected_cpu_isa();
  const std::vector<uint64_t> action_bounds = action_bounds_tile(rows);
  const at::IntArrayRef leading_sizes = logits.sizes().slice(0, logits.dim() - 1);
  const at::ScalarType acc_dtype = row_stats.scalar_type();
  const int64_t N = rows.num_rows();
  const at::Tensor grad_entropy_rows = per_row_grad(
      grad_entropy, N, rows.scale, acc_dtype, logits.device());
  const at::Tensor grad_log_prob_rows = grad_log_prob.has_value()
      ? per_row_grad(grad_log_prob, N, rows.scale, acc_dtype, logits.device())
      : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(),
      "_log_prob_and_entropy_backward", [&] {
        using acc = acc_t<scalar_t>;
        const auto token_backward = row_kernels<scalar_t>(isa).token_backward;
        const std::vector<LogitRows<scalar_t>> heads = head_rows<scalar_t>(rows);
        const RowStats<acc> all_stats = row_stats_view<acc>(row_stats);
        const bool* kept = data_or_null<bool>(rows.mask);
        scalar_t* out = grad_logits.data_ptr<scalar_t>();
        const int64_t K = rows.num_cols();
        for_row_chunks(N, K, [&](int64_t begin, int64_t end) {
          // The taken actions matter only with a log_prob gradient.
          if (grad_log_prob_rows.defined()) {
            check_head_actions(
                rows, action_bounds, kept, begin, end, leading_sizes,
                "_log_prob_and_entropy_backward");
          }
          for_each_run(
              kept, begin, end,
              [&](int64_t run_begin, int64_t run_end) {
                // Each sub-head's gradient goes straight into its columns:
                // the upstream gradients are the sums', shared by the heads.
                for_each_piece(run_begin, run_end, rows.heads.size(), [&](int64_t first, int64_t last) {
                  for (size_t h = 0; h < rows.heads.size(); ++h) {
                    const TokenGrads<acc> grads{
                        grad_entropy_rows.const_data_ptr<acc>(),
                        data_or_null<acc>(grad_log_prob_rows),
                        grad_log_prob_rows.defined() ? head_actions(rows, h)
                                                     : nullptr,
                        rows.num_action_columns()};
                    token_backward(
                        heads[h], first, last,
                        sub_head_stats(all_stats, static_cast<int64_t>(h), N),
                        grads, out + rows.heads[h].first_column, K);
                  }
                });
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

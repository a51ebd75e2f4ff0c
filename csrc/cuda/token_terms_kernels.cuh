// The CUDA kernels of log_prob_and_entropy and its backward. Rows are
// independent, so there is no batch reduction: each row's statistics,
// entropy and log-probability are written where the row is read.
// - Forward, rows in warps (K <= 1024): the rows-in-warps layout of
//   forward_kernels.cuh (a group of lanes holds a row in registers).
// - Forward, a row per block (K > 1024): each thread a running softmax
//   state over 16-byte vectors (thread_softmax_state), merged by the block:
//   one read of the logits whatever K.
// - Backward: one launch that reads the logits once and writes their
//   gradient once: flat for short rows, a block per row for long ones.
// A row the mask drops is neither read nor differentiated: its outputs and
// gradient are 0. Each kept row's action is checked by a device-side assert
// (as torch.gather's index check), never on the host. An action mask picks
// each kernel's kActionMask instance, which reads every logit with its flag
// (ActionMaskRow) in the same pass; the other reads the logits alone.
#pragma once

#include <cstdint>

#include "backward_kernel.cuh"
#include "block_reduce.cuh"
#include "forward_kernels.cuh"

namespace hee {
namespace cuda {

// The rows of one (sub-)head as both kernels read them: K = num_cols
// columns from `logits` (a sub-head's first column), any row stride.
template <typename scalar_t>
struct TokenHeadRows {
  using acc = acc_t<scalar_t>;
  const scalar_t* logits = nullptr;  // [N, K], unit column stride
  int64_t num_rows = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  acc scale = acc(1);  // 1 / T (math::tempered_log_prob)
  // [N, K] with unit column stride and any row stride (0 broadcasts one
  // row); read by the kActionMask kernels only.
  const bool* allowed = nullptr;
  int64_t allowed_row_stride = 0;
  // Row i's taken action at actions[i * action_stride] (H for one sub-head's
  // column of [N, H] actions); nullptr without actions, and in a backward
  // without a log_prob gradient.
  const int64_t* actions = nullptr;
  int64_t action_stride = 1;
};

template <typename scalar_t>
struct TokenForwardArgs : TokenHeadRows<scalar_t> {
  using acc = acc_t<scalar_t>;
  const bool* mask = nullptr;  // [N]; nullptr keeps every row
  acc* log_prob = nullptr;  // [N]; nullptr without actions
  acc* entropy = nullptr;  // [N]
  // Rows of [3, stats_pitch] from here: shift, log_sum_exp, entropy (one
  // sub-head's N columns of [3, H * N]; stats_pitch = N for one head).
  acc* row_stats = nullptr;
  int64_t stats_pitch = 0;
};

__device__ __forceinline__ bool row_is_kept(const bool* mask, int64_t row) {
  return mask == nullptr || mask[row];
}

// Writes a row's outputs: its statistics, entropy and log-probability (-inf
// for a ruled-out action), or zeros for a row the mask drops.
template <typename scalar_t, typename Allowed>
__device__ __forceinline__ void write_token_row(
    const TokenForwardArgs<scalar_t>& a,
    int64_t row,
    bool kept,
    const math::RowStatistics<acc_t<scalar_t>>& r,
    const Allowed& allowed) {
  using acc = acc_t<scalar_t>;
  const math::RowStatistics<acc> zeros{acc(0), acc(0), acc(0)};
  store_row_statistics(a.row_stats, a.stats_pitch, row, kept ? r : zeros);
  a.entropy[row] = kept ? r.entropy : acc(0);
  if (a.log_prob == nullptr) {
    return;
  }
  acc log_prob = acc(0);
  if (kept) {
    const int64_t action = a.actions[row * a.action_stride];
    CUDA_KERNEL_ASSERT(action >= 0 && action < a.num_cols);
    log_prob = math::tempered_log_prob(
        allowed_logit_at(
            allowed, action,
            static_cast<acc>(a.logits[row * a.row_stride + action])),
        r.shift, a.scale, r.log_sum_exp);
  }
  a.log_prob[row] = log_prob;
}

template <typename scalar_t, int kLog2Cols, int kVec, bool kActionMask>
__global__ void __launch_bounds__(kRowsInWarpsThreads)
    token_forward_rows_in_warps(TokenForwardArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  constexpr RowsInWarpsShape kShape = rows_in_warps_shape(kLog2Cols, kVec);
  constexpr int kThreadsPerRow = kShape.threads_per_row;
  const int group = threadIdx.x / kThreadsPerRow;
  const int lane = threadIdx.x % kThreadsPerRow;
  const int64_t rows_per_wave =
      static_cast<int64_t>(gridDim.x) * kShape.rows_per_block;
  // Every lane of a warp runs the same iterations (the shuffles need them
  // all); lanes of rows past the batch or dropped by the mask read nothing.
  for (int64_t first_row =
           static_cast<int64_t>(blockIdx.x) * kShape.rows_per_block;
       first_row < a.num_rows; first_row += rows_per_wave) {
    const int64_t row = first_row + group;
    const bool in_batch = row < a.num_rows;
    const bool kept = in_batch && row_is_kept(a.mask, row);
    const auto allowed = allowed_actions<kActionMask>(a, kept ? row : 0);
    const math::RowStatistics<acc> r = group_row_statistics<kLog2Cols, kVec>(
        a.logits + (kept ? row : 0) * a.row_stride, kept ? a.num_cols : 0,
        lane, a.scale, allowed);
    if (lane == 0 && in_batch) {
      write_token_row(a, row, kept, r, allowed);
    }
  }
}

template <typename scalar_t, int kVec, bool kActionMask>
__global__ void __launch_bounds__(kMaxBlockThreads)
    token_forward_row_in_block(TokenForwardArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  for (int64_t row = blockIdx.x; row < a.num_rows; row += gridDim.x) {
    // The same for every thread of the block, so the merge's barriers are
    // reached by all or none.
    const bool kept = row_is_kept(a.mask, row);
    const auto allowed = allowed_actions<kActionMask>(a, row);
    math::RowStatistics<acc> r{acc(0), acc(0), acc(0)};
    if (kept) {
      r = math::finish_row(block_merge(
          thread_softmax_state<kVec>(
              a.logits + row * a.row_stride, 0, a.num_cols, a.scale, allowed),
          a.scale));
    }
    if (threadIdx.x == 0) {
      write_token_row(a, row, kept, r, allowed);
    }
  }
}

template <typename scalar_t>
struct TokenBackwardArgs : TokenHeadRows<scalar_t> {
  using acc = acc_t<scalar_t>;
  const acc* row_stats = nullptr;  // as TokenForwardArgs'
  int64_t stats_pitch = 0;
  // Upstream gradients per row, each times scale; grad_log_prob is nullptr
  // without a log_prob gradient (and the actions then too).
  const acc* grad_entropy = nullptr;
  const acc* grad_log_prob = nullptr;
  const bool* mask = nullptr;
  // Row i at grad_logits + i * grad_row_stride, unit column stride
  // (grad_row_stride = K for a contiguous [N, K]; the logits' width for one
  // sub-head's columns of it).
  scalar_t* grad_logits = nullptr;
  int64_t grad_row_stride = 0;
  FastDivider cols_divider;  // by K, for flat indices below 2^31
};

// What every element of a row's gradient needs (token_terms_grad_element).
template <typename acc>
struct TokenRowConstants {
  bool kept;
  acc shift;
  acc log_sum_exp;
  acc negative_grad_entropy;
  acc negative_row_offset;
  acc grad_log_prob;
  int64_t action;  // the column that gets g_a, or -1
};

template <typename scalar_t, typename Allowed>
__device__ __forceinline__ TokenRowConstants<acc_t<scalar_t>> token_row_constants(
    const TokenBackwardArgs<scalar_t>& a,
    int64_t row,
    const Allowed& allowed) {
  using acc = acc_t<scalar_t>;
  TokenRowConstants<acc> c{};
  c.kept = row_is_kept(a.mask, row);
  c.action = -1;
  if (!c.kept) {
    return c;
  }
  c.shift = a.row_stats[row];
  c.log_sum_exp = a.row_stats[a.stats_pitch + row];
  const acc grad_entropy = a.grad_entropy[row];
  c.grad_log_prob = a.grad_log_prob != nullptr ? a.grad_log_prob[row] : acc(0);
  c.negative_grad_entropy = acc(0) - grad_entropy;
  c.negative_row_offset = math::token_terms_row_offset(
      c.grad_log_prob, grad_entropy, a.row_stats[2 * a.stats_pitch + row]);
  if (a.actions != nullptr) {
    const int64_t action = a.actions[row * a.action_stride];
    CUDA_KERNEL_ASSERT(action >= 0 && action < a.num_cols);
    // A -inf logit (a ruled-out action's included) is a constant: no term
    // of its own.
    const acc taken = allowed_logit_at(
        allowed, action,
        static_cast<acc>(a.logits[row * a.row_stride + action]));
    c.action = taken == math::negative_infinity<acc>() ? -1 : action;
  }
  return c;
}

template <typename acc, typename scalar_t>
__device__ __forceinline__ scalar_t token_logit_grad(
    const TokenRowConstants<acc>& c,
    acc logit,
    acc scale,
    int64_t col) {
  if (!c.kept) {
    return scalar_t(0);
  }
  const acc grad = math::token_terms_grad_element<math::FastExp>(
      logit, c.shift, scale, c.log_sum_exp, c.negative_grad_entropy,
      c.negative_row_offset, math::log_probability_floor<acc>());
  return static_cast<scalar_t>(col == c.action ? grad + c.grad_log_prob : grad);
}

// Flat over the logits, for rows too short for a block each (as
// backward_logits; index_t likewise).
template <typename scalar_t, int kVec, typename index_t, bool kActionMask>
__global__ void __launch_bounds__(kBackwardThreads)
    token_backward_flat(TokenBackwardArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const index_t cols = static_cast<index_t>(a.num_cols);
  const index_t num_vectors =
      static_cast<index_t>(a.num_rows * a.num_cols / kVec);
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t v = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       v < num_vectors; v += stride) {
    const index_t element = v * kVec;
    index_t row;
    if constexpr (sizeof(index_t) == sizeof(uint32_t)) {
      row = a.cols_divider.divide(element);
    } else {
      row = element / cols;
    }
    const index_t col = element - row * cols;
    const auto allowed =
        allowed_actions<kActionMask>(a, static_cast<int64_t>(row));
    const TokenRowConstants<acc> c = token_row_constants(a, row, allowed);
    acc values[kVec];
    if (c.kept) {
      load_logit_vector<kVec>(
          a.logits + static_cast<int64_t>(row) * a.row_stride,
          static_cast<int64_t>(col), values);
      allowed.template apply<kVec>(
          static_cast<int64_t>(col), a.num_cols, values);
    }
    LogitVector<scalar_t, kVec> out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      out.values[j] = token_logit_grad<acc, scalar_t>(
          c, c.kept ? values[j] : acc(0), a.scale,
          static_cast<int64_t>(col) + j);
    }
    *reinterpret_cast<LogitVector<scalar_t, kVec>*>(
        a.grad_logits + static_cast<int64_t>(row) * a.grad_row_stride +
        static_cast<int64_t>(col)) = out;
  }
}

// A row per block, for long rows (as backward_logit_rows: a peel and a tail
// one column per thread, vectors between them).
template <typename scalar_t, int kVec, bool kActionMask>
__global__ void __launch_bounds__(kBackwardThreads)
    token_backward_rows(TokenBackwardArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const int64_t cols = a.num_cols;
  for (int64_t row = blockIdx.x; row < a.num_rows; row += gridDim.x) {
    const scalar_t* z = a.logits + row * a.row_stride;
    scalar_t* g = a.grad_logits + row * a.grad_row_stride;
    const auto allowed = allowed_actions<kActionMask>(a, row);
    const TokenRowConstants<acc> c = token_row_constants(a, row, allowed);
    const int64_t misaligned_by = static_cast<int64_t>(
        reinterpret_cast<uintptr_t>(z) % sizeof(LogitVector<scalar_t, kVec>) /
        sizeof(scalar_t));
    const int64_t peel = misaligned_by == 0
        ? 0
        : (kVec - misaligned_by < cols ? kVec - misaligned_by : cols);
    const int64_t vectors = (cols - peel) / kVec;
    const int64_t tail_begin = peel + vectors * kVec;
    for (int64_t i = threadIdx.x; i < peel + (cols - tail_begin);
         i += blockDim.x) {
      const int64_t col = i < peel ? i : tail_begin + (i - peel);
      g[col] = token_logit_grad<acc, scalar_t>(
          c,
          c.kept ? allowed_logit_at(allowed, col, static_cast<acc>(z[col]))
                 : acc(0),
          a.scale, col);
    }
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      const int64_t col = peel + v * kVec;
      acc values[kVec];
      if (c.kept) {
        load_logit_vector<kVec>(z, col, values);
        allowed.template apply<kVec>(col, cols, values);
      }
      LogitVector<scalar_t, kVec> out;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        out.values[j] = token_logit_grad<acc, scalar_t>(
            c, c.kept ? values[j] : acc(0), a.scale, col + j);
      }
      *reinterpret_cast<LogitVector<scalar_t, kVec>*>(g + col) = out;
    }
  }
}

} // namespace cuda
} // namespace hee

// What the CPU drivers of both ops share about tensors and threads: how they
// allocate outputs, how they see the [3, H * N] row statistics and each
// sub-head's columns, and the least work worth a thread of the pool.
#pragma once

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>

#include "../loss_plan.h"
#include "row_kernels.h"

namespace hee {
namespace cpu {

// Work below this many elements runs on the calling thread: waking the pool
// costs more than it saves.
constexpr int64_t kMinElementsPerTask = 32768;

// Outputs are allocated directly on the CPU allocator: at the ops' small
// sizes, a dispatcher round trip per output would dominate the call.
inline at::Tensor empty_cpu(const TensorSpec& spec) {
  return at::detail::empty_strided_cpu(
      C10_AS_INTARRAYREF_SLOW(spec.sizes), C10_AS_INTARRAYREF_SLOW(spec.strides),
      spec.dtype, /*pin_memory=*/false);
}

// The rows of a contiguous [3, H * N] row_stats tensor (docs/design.md, "The
// row statistics"; sub_head_stats below picks one sub-head's N columns).
template <typename acc>
RowStats<acc> row_stats_view(const at::Tensor& row_stats) {
  acc* base = row_stats.data_ptr<acc>();
  const int64_t rows = row_stats.size(1);
  return {base, base + rows, base + 2 * rows};
}

// The logits of one sub-head and their action mask, if any (laid out by
// logits_for_kernels or token_rows_for_kernels): its columns of every row.
template <typename scalar_t>
LogitRows<scalar_t> logit_rows(
    const at::Tensor& logits,
    const OptionalTensor& action_mask,
    const DiscreteSubHead& head) {
  LogitRows<scalar_t> rows{
      logits.const_data_ptr<scalar_t>() + head.first_column, logits.stride(0),
      head.num_columns};
  if (action_mask.has_value()) {
    rows.allowed = action_mask->const_data_ptr<bool>() + head.first_column;
    rows.allowed_row_stride = action_mask->stride(0);
  }
  return rows;
}

// The row statistics of sub-head h of a batch of B rows: its rows of the
// [3, H * B] row_stats, indexed by the batch row like those of one head.
template <typename acc>
RowStats<acc> sub_head_stats(const RowStats<acc>& all, int64_t h, int64_t batch) {
  return {all.shift + h * batch, all.log_sum_exp + h * batch,
          all.entropy + h * batch};
}

} // namespace cpu
} // namespace hee

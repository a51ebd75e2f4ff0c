// What the CPU drivers of both ops share about tensors and threads: how they
// allocate outputs, how they see the [3, N] row statistics, and the least
// work worth a thread of the pool.
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

// The rows of a contiguous [3, N] row_stats tensor (docs/design.md, "The row
// statistics").
template <typename acc>
RowStats<acc> row_stats_view(const at::Tensor& row_stats) {
  acc* base = row_stats.data_ptr<acc>();
  const int64_t rows = row_stats.size(1);
  return {base, base + rows, base + 2 * rows};
}

} // namespace cpu
} // namespace hee

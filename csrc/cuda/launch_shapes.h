// What the launch plans of both ops share (launch_plan.h for the hybrid
// loss, token_terms_calls.h for the per-token terms): the GPU's shape, grid
// sizes, vector widths and alignment, the row layouts and the dispatch from
// runtime values to kernel templates.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "device_scalars.cuh"

namespace hee {
namespace cuda {

// Rows of at most this many columns are held in registers by a warp group.
constexpr int64_t kMaxColsInWarps = 1024;
constexpr int kMaxLog2ColsInWarps = 10;
// The GPU the grids are sized for: its multiprocessors and the threads each
// keeps resident (2048 on sm_80 and sm_90, 1536 on sm_86 and sm_89). Kernels
// loop over rows, so one wave of blocks covers any batch, the grid stays far
// below CUDA's limits, and there is one partial sum per block.
struct DeviceShape {
  int multiprocessors = 1;
  int threads_per_multiprocessor = 2048;
};

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

inline int ceil_log2(int64_t n) {
  int log2 = 0;
  while ((int64_t{1} << log2) < n) {
    ++log2;
  }
  return log2;
}

// The widest load a thread makes, and how many elements of a dtype it holds.
constexpr int kVectorBytes = 16;
template <typename scalar_t>
constexpr int kVectorWidth = kVectorBytes / sizeof(scalar_t);

inline int64_t element_size(DType dtype) {
  return dtype == DType::kDouble ? 8 : dtype == DType::kFloat ? 4 : 2;
}

// The size of a row statistic of logits of `dtype`: their accumulation
// dtype's (accumulate_type.h).
inline int64_t stats_element_size(DType logits_dtype) {
  return logits_dtype == DType::kDouble ? 8 : 4;
}

// Whether every row of [B, K] logits (and every row of a contiguous
// gradient of them, where one is written) can be read in vectors of
// `vector_bytes` from column 0 on.
inline bool rows_are_vector_aligned(
    const void* logits,
    int64_t row_stride,
    DType dtype,
    int64_t vector_bytes = kVectorBytes) {
  return reinterpret_cast<uintptr_t>(logits) % vector_bytes == 0 &&
      (row_stride * element_size(dtype)) % vector_bytes == 0;
}

// The grid of a loop over `work_blocks` blocks of `block_threads`: at most
// one wave of resident blocks, at least one.
inline int64_t one_wave_grid(
    int64_t work_blocks,
    int block_threads,
    const DeviceShape& device) {
  const int64_t wave = static_cast<int64_t>(device.multiprocessors) *
      std::max(1, device.threads_per_multiprocessor / block_threads);
  return std::max<int64_t>(1, std::min(work_blocks, wave));
}

enum class RowLayout { kRowsInWarps, kRowInBlock };


template <typename Fn>
void dispatch_logits_dtype(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::kFloat:
      fn(float{});
      return;
    case DType::kDouble:
      fn(double{});
      return;
    case DType::kHalf:
      fn(c10::Half{});
      return;
    case DType::kBFloat16:
      fn(c10::BFloat16{});
      return;
  }
}

// Calls fn(std::integral_constant<int, L>) for the runtime L in [0, kMax].
template <int kMax, typename Fn, int L = 0>
void dispatch_log2_cols(int log2_cols, const Fn& fn) {
  if constexpr (L <= kMax) {
    if (log2_cols == L) {
      fn(std::integral_constant<int, L>{});
    } else {
      dispatch_log2_cols<kMax, Fn, L + 1>(log2_cols, fn);
    }
  }
}

// Calls fn(std::bool_constant<has_action_mask>): the kernels' kActionMask.
template <typename Fn>
void dispatch_action_mask(bool has_action_mask, const Fn& fn) {
  if (has_action_mask) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

// Rows at least this long get a block each in the backward.
constexpr int64_t kMinColsBackwardByRows = kMaxColsInWarps + 1;

// How a backward over rows of num_cols logits lays out its threads, for both
// ops: a block per long row wherever the logits' and the gradient's rows
// start at the same offset within a vector (so one peel aligns both), else
// flat over the elements, in vectors where K is a multiple of the width and
// both tensors' rows are aligned. Row pitches in elements: the gradient's is
// K, or the logits' width for one sub-head's columns.
struct BackwardLayout {
  bool row_per_block = false;
  bool vectorized = false;
};
inline BackwardLayout backward_layout(
    const void* logits,
    int64_t logits_row_stride,
    const void* grad_logits,
    int64_t grad_row_stride,
    int64_t num_cols,
    DType dtype,
    int vector_width) {
  const int64_t size = element_size(dtype);
  BackwardLayout layout;
  layout.row_per_block = num_cols >= kMinColsBackwardByRows &&
      (reinterpret_cast<uintptr_t>(logits) -
       reinterpret_cast<uintptr_t>(grad_logits)) % kVectorBytes == 0 &&
      ((logits_row_stride - grad_row_stride) * size) % kVectorBytes == 0;
  layout.vectorized = num_cols % vector_width == 0 &&
      rows_are_vector_aligned(logits, logits_row_stride, dtype) &&
      rows_are_vector_aligned(grad_logits, grad_row_stride, dtype);
  return layout;
}

inline DType dtype_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return DType::kFloat;
    case at::kDouble:
      return DType::kDouble;
    case at::kHalf:
      return DType::kHalf;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK(false, "hybrid_entropy_ext: unsupported dtype ", dtype);
  return DType::kFloat;
}

} // namespace cuda
} // namespace hee

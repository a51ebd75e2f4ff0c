// The CUDA kernels of the forward: per-row statistics of the logits in one
// read, the Gaussian head in the same launch, and the loss combined on the
// device from fixed-order partial sums (docs/design.md, "The CUDA kernels").
//
// Layouts by row length K, chosen by launch_plan.h:
// - rows in warps (K <= 1024): a group of lanes holds one row in registers,
//   16-byte vectors per load where the rows allow, so short rows share a
//   warp (K = 4 float32: a row per lane) and a long one spreads over it; max
//   and moments by shuffles, one read. Each group loops over rows, so one
//   wave of blocks covers any batch and leaves one partial sum per block.
// - a row per block (K > 1024): each thread keeps a running softmax state
//   over chunks of 16-byte vectors (one exp per logit plus one per chunk),
//   and the block merges the states. Above a few thousand columns, when the
//   batch is too small to fill the GPU, the columns of a row are split over
//   several blocks and a second kernel merges the splits' states.
// Blocks past the logits' sum log_std, so that the forward is one launch
// for both heads, and a one-block kernel adds the partial sums in order and
// combines the losses.
#pragma once

#include <cstdint>

#include "block_reduce.cuh"
#include "device_scalars.cuh"

namespace hee {
namespace cuda {

constexpr int kRowsInWarpsThreads = 256;
// Rows per block of the kernel that merges column splits (a warp per row).
constexpr int kMergeRowsPerBlock = 8;
// Consecutive vectors a thread holds before it folds them into its running
// state: their loads are in flight together, and a chunk costs one rescale.
constexpr int kVectorsPerChunk = 4;

// log_std's elements as the forward sums them: per-sample [R, D] or shared
// [1, D], contiguous, any floating dtype.
struct LogStdSum {
  const void* values = nullptr;
  DType dtype = DType::kFloat;
  int64_t count = 0;  // R * D
  int64_t chunk = 0;  // elements per block
  double* partials = nullptr;  // one sum per block
  // Per-sample rows only: each element weighed by its row's weight.
  RowWeights weights;
  int64_t dims = 1;  // D
};

// A row's value as it enters a batch sum: weighed by the row's weight where
// there are weights.
template <typename T>
__device__ __forceinline__ double weighted_row_value(
    const RowWeights& weights,
    int64_t row,
    T value) {
  return weights.present() ? weights.at(row) * static_cast<double>(value)
                           : static_cast<double>(value);
}

template <typename scalar_t>
struct ForwardRowsArgs {
  using acc = acc_t<scalar_t>;
  const scalar_t* logits = nullptr;  // [B, K], unit column stride
  int64_t batch = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  // [3, pitch]: shift, log_sum_exp, entropy of row i at i (pitch >= B: a
  // sub-head's rows start at its offset in the [3, H * B] of all sub-heads).
  acc* row_stats = nullptr;
  int64_t stats_pitch = 0;
  // Blocks [0, num_logit_blocks) read logits, the rest sum log_std.
  int64_t num_logit_blocks = 0;
  double* entropy_partials = nullptr;  // one sum of row entropies per block
  // Each row's entropy's weight in the sums: the row weights, times each
  // row's normalizer where the entropy is normalized under an action mask.
  RowWeights row_weights;
  // Row in blocks: columns per split, and the splits' states when a row is
  // split over several blocks.
  int64_t splits = 1;
  int64_t split_cols = 0;
  math::SoftmaxState<acc>* split_states = nullptr;  // [B, splits]
  LogStdSum log_std;
  // [B, K] with unit column stride and any row stride (0 broadcasts one
  // row); read by the kActionMask kernels only.
  const bool* allowed = nullptr;
  int64_t allowed_row_stride = 0;
  // With sub-heads: the head's record, written by block 0 for the finish.
  SubHeadRecord* head_record = nullptr;
  SubHeadRecord head;
};

// Block 0 of a sub-head's row launch hands its record to the finish.
template <typename Args>
__device__ __forceinline__ void write_head_record(const Args& a) {
  if (a.head_record != nullptr && blockIdx.x == 0 && threadIdx.x == 0) {
    *a.head_record = a.head;
  }
}

template <typename acc>
__device__ __forceinline__ void store_row_statistics(
    acc* row_stats,
    int64_t pitch,
    int64_t row,
    const math::RowStatistics<acc>& r) {
  row_stats[row] = r.shift;
  row_stats[pitch + row] = r.log_sum_exp;
  row_stats[2 * pitch + row] = r.entropy;
}

// The block `block` of log_std's elements, summed in a fixed order into
// partials[block]. Called by every thread of a block.
__device__ __forceinline__ void sum_log_std_block(
    const LogStdSum& log_std,
    int64_t block) {
  const int64_t begin = block * log_std.chunk;
  const int64_t end = begin + log_std.chunk < log_std.count
      ? begin + log_std.chunk
      : log_std.count;
  double share = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double value = load_as_double(log_std.values, log_std.dtype, i);
    share += log_std.weights.present()
        ? log_std.weights.at(i / log_std.dims) * value
        : value;
  }
  const double sum = block_sum(share);
  if (threadIdx.x == 0) {
    log_std.partials[block] = sum;
  }
}

// The shape of the rows-in-warps layout, for rows of at most 2^log2_cols
// columns read `vec` logits per load (1 where the rows are not aligned for
// vectors): the same numbers for the kernel and its launch plan.
struct RowsInWarpsShape {
  int load_width;  // logits per load
  int threads_per_row;
  int loads_per_thread;
  int rows_per_block;
};

HEE_HOST_DEVICE constexpr RowsInWarpsShape rows_in_warps_shape(
    int log2_cols,
    int vec) {
  const int padded_cols = 1 << log2_cols;
  const int load_width = vec < padded_cols ? vec : padded_cols;
  const int loads_per_row = padded_cols / load_width;
  const int threads_per_row =
      loads_per_row < kWarpSize ? loads_per_row : kWarpSize;
  return {load_width, threads_per_row, loads_per_row / threads_per_row,
          (kWarpSize / threads_per_row) * (kRowsInWarpsThreads / kWarpSize)};
}

// kVec consecutive logits of a row. With kVec > 1, one load of
// sizeof(scalar_t) * kVec bytes (the launch plan guarantees the alignment).
template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) LogitVector {
  scalar_t values[kVec];
};

// kVec logits from column k on, all inside the row.
template <int kVec, typename scalar_t, typename acc>
__device__ __forceinline__ void load_logit_vector(
    const scalar_t* row,
    int64_t k,
    acc* out) {
  const LogitVector<scalar_t, kVec> v =
      *reinterpret_cast<const LogitVector<scalar_t, kVec>*>(row + k);
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    out[j] = static_cast<acc>(v.values[j]);
  }
}

// kVec logits from column k on, as acc; columns at or past `end` are masked
// (-inf), and a vector that lies wholly inside is one load.
template <int kVec, typename scalar_t, typename acc>
__device__ __forceinline__ void load_logits(
    const scalar_t* row,
    int64_t k,
    int64_t end,
    acc* out) {
  if (kVec > 1 && k + kVec <= end) {
    load_logit_vector<kVec>(row, k, out);
    return;
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    out[j] = k + j < end ? static_cast<acc>(row[k + j])
                         : math::negative_infinity<acc>();
  }
}

// The actions of a row that the logits' readers below take: every one
// (AllActionsAllowed, a call without a mask; an empty type, so that its
// readers compile to what they would without it) or those of a row of an action
// mask (ActionMaskRow: a ruled-out action's logit is read as -inf,
// math::allowed_logit, in the same pass as the logits).
struct AllActionsAllowed {
  template <int kVec, typename acc>
  __device__ __forceinline__ void apply(int64_t, int64_t, acc*) const {}
};

struct ActionMaskRow {
  const bool* allowed;  // the row's [K] flags, unit stride

  // Masks the kVec logits of columns k on; only columns below `end` are
  // read (the loaders' -inf stands for the others).
  template <int kVec, typename acc>
  __device__ __forceinline__ void apply(int64_t k, int64_t end, acc* values)
      const {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (k + j < end) {
        values[j] = math::allowed_logit(values[j], allowed[k + j]);
      }
    }
  }
};

// The actions of row `row` of a kernel argument with an action mask
// (`allowed`, `allowed_row_stride`), which only the kActionMask kernels read.
template <bool kActionMask, typename Args>
__device__ __forceinline__ auto allowed_actions(const Args& a, int64_t row) {
  if constexpr (kActionMask) {
    return ActionMaskRow{a.allowed + row * a.allowed_row_stride};
  } else {
    return AllActionsAllowed{};
  }
}

// A logit of column k as the row's actions leave it.
template <typename Allowed, typename acc>
__device__ __forceinline__ acc allowed_logit_at(
    const Allowed& allowed,
    int64_t k,
    acc logit) {
  allowed.template apply<1>(k, k + 1, &logit);
  return logit;
}

// The statistics of the row at z, held by a group of lanes: this lane's
// loads of its columns below `end` (0 for a row that is not read: every lane
// of the warp must call it, for the shuffles), kLoadWidth logits each,
// kThreadsPerRow apart, of the actions `allowed` takes; with a scale, those
// of tempered logits (math::tempered_log_prob). Every lane of the group gets
// them.
template <int kLog2Cols, int kVec, typename scalar_t, typename acc = acc_t<scalar_t>,
          typename Allowed = AllActionsAllowed>
__device__ __forceinline__ math::RowStatistics<acc> group_row_statistics(
    const scalar_t* z,
    int64_t end,
    int lane,
    acc scale = acc(1),
    Allowed allowed = Allowed{}) {
  constexpr RowsInWarpsShape kShape = rows_in_warps_shape(kLog2Cols, kVec);
  constexpr int kWidth = kShape.load_width;
  constexpr int kThreadsPerRow = kShape.threads_per_row;
  constexpr int kPerThread = kShape.loads_per_thread * kWidth;
  const acc lowest = math::lowest_finite<acc>();
  acc values[kPerThread];
#pragma unroll
  for (int i = 0; i < kShape.loads_per_thread; ++i) {
    const int64_t k = static_cast<int64_t>(lane + i * kThreadsPerRow) * kWidth;
    load_logits<kWidth>(z, k, end, values + i * kWidth);
    allowed.template apply<kWidth>(k, end, values + i * kWidth);
  }
  acc thread_max = values[0];
#pragma unroll
  for (int j = 1; j < kPerThread; ++j) {
    thread_max = math::max_ignoring_nan(thread_max, values[j]);
  }
  const acc shift =
      math::row_shift(group_max<kThreadsPerRow>(thread_max), lowest);
  acc sum_exp = acc(0);
  acc sum_exp_times_shift = acc(0);
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    math::accumulate_softmax_moments_fast(
        (values[j] - shift) * scale, lowest, sum_exp, sum_exp_times_shift);
  }
  return math::finish_row(
      math::SoftmaxState<acc>{shift, group_sum<kThreadsPerRow>(sum_exp),
                              group_sum<kThreadsPerRow>(sum_exp_times_shift)});
}

// Rows in warps: kLog2Cols = ceil(log2 K), K <= 1024.
template <typename scalar_t, int kLog2Cols, int kVec, bool kActionMask>
__global__ void __launch_bounds__(kRowsInWarpsThreads)
    forward_rows_in_warps(ForwardRowsArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  constexpr RowsInWarpsShape kShape = rows_in_warps_shape(kLog2Cols, kVec);
  constexpr int kThreadsPerRow = kShape.threads_per_row;
  if (static_cast<int64_t>(blockIdx.x) >= a.num_logit_blocks) {
    sum_log_std_block(a.log_std, blockIdx.x - a.num_logit_blocks);
    return;
  }
  write_head_record(a);
  const int group = threadIdx.x / kThreadsPerRow;
  const int lane = threadIdx.x % kThreadsPerRow;
  // Rows of this block's groups, then the next wave's: every lane of a warp
  // runs the same number of iterations (the shuffles need them all), lanes
  // of rows past the batch with masked values, writing nothing.
  const int64_t rows_per_wave = a.num_logit_blocks * kShape.rows_per_block;
  double entropy_sum = 0.0;  // of this group's rows, in order
  for (int64_t first_row = static_cast<int64_t>(blockIdx.x) *
           kShape.rows_per_block;
       first_row < a.batch; first_row += rows_per_wave) {
    const int64_t row = first_row + group;
    const bool active = row < a.batch;
    const math::RowStatistics<acc> r = group_row_statistics<kLog2Cols, kVec>(
        a.logits + (active ? row : 0) * a.row_stride,
        active ? a.num_cols : 0, lane, acc(1),
        allowed_actions<kActionMask>(a, active ? row : 0));
    if (lane == 0 && active) {
      store_row_statistics(a.row_stats, a.stats_pitch, row, r);
      entropy_sum += weighted_row_value(a.row_weights, row, r.entropy);
    }
  }
  // Group leaders hold their rows' sums, every other lane 0.
  const double block_entropy_sum = block_sum(entropy_sum);
  if (threadIdx.x == 0) {
    a.entropy_partials[blockIdx.x] = block_entropy_sum;
  }
}

// A chunk of logits folded into a running softmax state: the chunk's max
// moves the state once (shift_running_moments), then the chunk's moments are
// added relative to the new max.
template <int kChunk, typename acc>
__device__ __forceinline__ void fold_chunk(
    const acc* chunk,
    acc& running_max,
    acc& sum_exp,
    acc& sum_exp_times_shift,
    acc scale) {
  const acc lowest = math::lowest_finite<acc>();
  acc chunk_max = running_max;
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    chunk_max = math::max_ignoring_nan(chunk_max, chunk[j]);
  }
  math::shift_running_moments(
      running_max, chunk_max, sum_exp, sum_exp_times_shift, scale);
  running_max = chunk_max;
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    math::accumulate_softmax_moments_fast(
        (chunk[j] - running_max) * scale, lowest, sum_exp,
        sum_exp_times_shift);
  }
}

// One thread's running softmax state over columns [begin, end) of a row,
// kVec logits per load, kVectorsPerChunk loads in flight per chunk: the
// columns before the first vector boundary one per thread (a peel, as
// PyTorch's SoftMax.cu does, so that rows of any stride, an odd vocabulary
// or a slice, keep their vector loads), then full chunks without per-vector
// guards, then at most one partial chunk, masked. `z` is aligned to its
// element size, as every tensor's data is. With a scale, the moments are of
// tempered logits (math::shift_running_moments; a scale of 1 multiplies by
// nothing); only the actions `allowed` takes count.
template <int kVec, typename scalar_t, typename acc = acc_t<scalar_t>,
          typename Allowed = AllActionsAllowed>
__device__ __forceinline__ math::SoftmaxState<acc> thread_softmax_state(
    const scalar_t* z,
    int64_t begin,
    int64_t end,
    acc scale = acc(1),
    Allowed allowed = Allowed{}) {
  constexpr int kChunk = kVectorsPerChunk * kVec;
  const int64_t vector_stride = static_cast<int64_t>(blockDim.x) * kVec;
  const int64_t chunk_stride = vector_stride * kVectorsPerChunk;
  // The last column a full chunk reads, past its first.
  const int64_t chunk_span = vector_stride * (kVectorsPerChunk - 1) + kVec;
  // The running max starts at the lowest finite value, so that it is also
  // the row's shift (row_shift) and a thread that saw only masked logits
  // holds s = t = 0.
  acc running_max = math::lowest_finite<acc>();
  acc sum_exp = acc(0);
  acc sum_exp_times_shift = acc(0);
  acc chunk[kChunk];
  const int64_t misaligned_by = static_cast<int64_t>(
      reinterpret_cast<uintptr_t>(z + begin) %
      sizeof(LogitVector<scalar_t, kVec>) / sizeof(scalar_t));
  const int64_t peel = misaligned_by == 0
      ? 0
      : (kVec - misaligned_by < end - begin ? kVec - misaligned_by
                                            : end - begin);
  if (static_cast<int64_t>(threadIdx.x) < peel) {
    chunk[0] = static_cast<acc>(z[begin + threadIdx.x]);
    allowed.template apply<1>(begin + threadIdx.x, end, chunk);
    fold_chunk<1>(chunk, running_max, sum_exp, sum_exp_times_shift, scale);
  }
  begin += peel;
  int64_t first = begin + static_cast<int64_t>(threadIdx.x) * kVec;
  for (; first + chunk_span <= end; first += chunk_stride) {
#pragma unroll
    for (int u = 0; u < kVectorsPerChunk; ++u) {
      load_logit_vector<kVec>(z, first + u * vector_stride, chunk + u * kVec);
      allowed.template apply<kVec>(
          first + u * vector_stride, end, chunk + u * kVec);
    }
    fold_chunk<kChunk>(
        chunk, running_max, sum_exp, sum_exp_times_shift, scale);
  }
  if (first < end) {
#pragma unroll
    for (int u = 0; u < kVectorsPerChunk; ++u) {
      load_logits<kVec>(z, first + u * vector_stride, end, chunk + u * kVec);
      allowed.template apply<kVec>(
          first + u * vector_stride, end, chunk + u * kVec);
    }
    fold_chunk<kChunk>(
        chunk, running_max, sum_exp, sum_exp_times_shift, scale);
  }
  return {running_max, sum_exp, sum_exp_times_shift};
}

// A row per block (or per split of a row): blockDim.x threads, kVec logits
// per load. Unsplit rows: block b takes rows b, b + gridDim, ..., and
// writes one sum of its rows' entropies.
template <typename scalar_t, int kVec, bool kActionMask>
__global__ void __launch_bounds__(kMaxBlockThreads)
    forward_row_in_block(ForwardRowsArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const int64_t block = blockIdx.x;
  if (block >= a.num_logit_blocks) {
    sum_log_std_block(a.log_std, block - a.num_logit_blocks);
    return;
  }
  write_head_record(a);
  if (a.splits > 1) {
    const int64_t row = block / a.splits;
    const int64_t begin = (block % a.splits) * a.split_cols;
    const int64_t end = begin + a.split_cols < a.num_cols
        ? begin + a.split_cols
        : a.num_cols;
    const math::SoftmaxState<acc> state =
        block_merge(thread_softmax_state<kVec>(
            a.logits + row * a.row_stride, begin, end, acc(1),
            allowed_actions<kActionMask>(a, row)));
    if (threadIdx.x == 0) {
      a.split_states[block] = state;
    }
    return;
  }
  double entropy_sum = 0.0;  // of this block's rows, in order
  for (int64_t row = block; row < a.batch; row += a.num_logit_blocks) {
    const math::SoftmaxState<acc> state =
        block_merge(thread_softmax_state<kVec>(
            a.logits + row * a.row_stride, 0, a.num_cols, acc(1),
            allowed_actions<kActionMask>(a, row)));
    if (threadIdx.x == 0) {
      const math::RowStatistics<acc> r = math::finish_row(state);
      store_row_statistics(a.row_stats, a.stats_pitch, row, r);
      entropy_sum += weighted_row_value(a.row_weights, row, r.entropy);
    }
  }
  if (threadIdx.x == 0) {
    a.entropy_partials[block] = entropy_sum;
  }
}

// Merges the column splits of each row (a warp per row, a lane per split),
// writes the row statistics and one sum of row entropies per block.
template <typename acc>
struct MergeSplitsArgs {
  const math::SoftmaxState<acc>* split_states = nullptr;  // [B, splits]
  int64_t batch = 0;
  int64_t splits = 1;  // at most 32
  acc* row_stats = nullptr;
  int64_t stats_pitch = 0;
  double* entropy_partials = nullptr;
  RowWeights row_weights;
};

template <typename acc>
__global__ void __launch_bounds__(kMergeRowsPerBlock * kWarpSize)
    merge_column_splits(MergeSplitsArgs<acc> a) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * kMergeRowsPerBlock + warp;
  const bool active = row < a.batch;
  math::SoftmaxState<acc> state = active && lane < a.splits
      ? a.split_states[row * a.splits + lane]
      : math::empty_softmax_state<acc>();
  state = warp_merge(state);
  const math::RowStatistics<acc> r = math::finish_row(state);
  const bool writes = lane == 0 && active;
  if (writes) {
    store_row_statistics(a.row_stats, a.stats_pitch, row, r);
  }
  const double block_entropy_sum = block_sum(
      writes ? weighted_row_value(a.row_weights, row, r.entropy) : 0.0);
  if (threadIdx.x == 0) {
    a.entropy_partials[blockIdx.x] = block_entropy_sum;
  }
}

} // namespace cuda
} // namespace hee

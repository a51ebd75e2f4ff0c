// The CUDA kernels of the forward: per-row statistics of the logits in one
// read, the Gaussian head in the same launch, and the loss combined on the
// device from fixed-order partial sums (docs/design.md, "The CUDA kernels").
//
// Layouts by row length K, chosen by launch_plan.h:
// - rows in warps (K <= 1024): a group of min(K rounded up to a power of two,
//   32) lanes holds one row in registers, so several short rows share a warp
//   and a long one spreads over it; max and moments by shuffles, one read.
// - a row per block (K > 1024): each thread keeps a running softmax state
//   over chunks of 16-byte vectors (one exp per logit plus one per chunk), and
//   the block merges the states. Above a few thousand columns, when the batch
//   is too small to fill the GPU, the columns of a row are split over several
//   blocks and a second kernel merges the splits' states.
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
};

template <typename scalar_t>
struct ForwardRowsArgs {
  using acc = acc_t<scalar_t>;
  const scalar_t* logits = nullptr;  // [B, K], unit column stride
  int64_t batch = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  acc* row_stats = nullptr;  // [3, B]: shift, log_sum_exp, entropy
  // Blocks [0, num_logit_blocks) read logits, the rest sum log_std.
  int64_t num_logit_blocks = 0;
  double* entropy_partials = nullptr;  // one sum of row entropies per block
  // Row in blocks: columns per split, and the splits' states when a row is
  // split over several blocks.
  int64_t splits = 1;
  int64_t split_cols = 0;
  math::SoftmaxState<acc>* split_states = nullptr;  // [B, splits]
  LogStdSum log_std;
};

template <typename acc>
__device__ __forceinline__ void store_row_statistics(
    acc* row_stats,
    int64_t batch,
    int64_t row,
    const math::RowStatistics<acc>& r) {
  row_stats[row] = r.shift;
  row_stats[batch + row] = r.log_sum_exp;
  row_stats[2 * batch + row] = r.entropy;
}

// The block `block` of log_std's elements, summed in a fixed order into
// partials[block]. Called by every thread of a block.
__device__ __forceinline__ void sum_log_std_block(
    const LogStdSum& log_std,
    int64_t block) {
  __shared__ double shares[kMaxBlockThreads];
  const int64_t begin = block * log_std.chunk;
  const int64_t end = begin + log_std.chunk < log_std.count
      ? begin + log_std.chunk
      : log_std.count;
  double share = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    share += load_as_double(log_std.values, log_std.dtype, i);
  }
  shares[threadIdx.x] = share;
  __syncthreads();
  const double sum = tree_sum(shares, blockDim.x);
  if (threadIdx.x == 0) {
    log_std.partials[block] = sum;
  }
}

// Rows in warps: kLog2Cols = ceil(log2 K), K <= 1024.
template <typename scalar_t, int kLog2Cols>
__global__ void __launch_bounds__(kRowsInWarpsThreads)
    forward_rows_in_warps(ForwardRowsArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  if (static_cast<int64_t>(blockIdx.x) >= a.num_logit_blocks) {
    sum_log_std_block(a.log_std, blockIdx.x - a.num_logit_blocks);
    return;
  }
  constexpr int kPaddedCols = 1 << kLog2Cols;
  constexpr int kThreadsPerRow = kPaddedCols < kWarpSize ? kPaddedCols : kWarpSize;
  constexpr int kPerThread = kPaddedCols / kThreadsPerRow;
  constexpr int kRowsPerBlock = kRowsInWarpsThreads / kThreadsPerRow;
  __shared__ double row_entropies[kRowsPerBlock];

  const int group = threadIdx.x / kThreadsPerRow;
  const int lane = threadIdx.x % kThreadsPerRow;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + group;
  // Lanes of rows past the batch take part in the shuffles with masked
  // values and write nothing.
  const bool active = row < a.batch;
  const scalar_t* z = a.logits + (active ? row : 0) * a.row_stride;
  const acc lowest = math::lowest_finite<acc>();
  acc values[kPerThread];
  acc row_max = math::negative_infinity<acc>();
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t k = lane + i * kThreadsPerRow;
    values[i] = active && k < a.num_cols ? static_cast<acc>(z[k])
                                         : math::negative_infinity<acc>();
    row_max = math::max_of(values[i], row_max);
  }
  const acc shift =
      math::row_shift(group_max<kThreadsPerRow>(row_max), lowest);
  acc sum_exp = acc(0);
  acc sum_exp_times_shift = acc(0);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    math::accumulate_softmax_moments(
        values[i] - shift, lowest, sum_exp, sum_exp_times_shift);
  }
  const acc row_sum = math::row_sum_exp(group_sum<kThreadsPerRow>(sum_exp));
  const acc log_sum_exp = math::log_of(row_sum);
  const acc entropy = math::row_entropy_from_moments(
      log_sum_exp, row_sum, group_sum<kThreadsPerRow>(sum_exp_times_shift));
  if (lane == 0) {
    if (active) {
      store_row_statistics(
          a.row_stats, a.batch, row, {shift, log_sum_exp, entropy});
    }
    row_entropies[group] = active ? static_cast<double>(entropy) : 0.0;
  }
  __syncthreads();
  const double block_sum = tree_sum(row_entropies, kRowsPerBlock);
  if (threadIdx.x == 0) {
    a.entropy_partials[blockIdx.x] = block_sum;
  }
}

// kVec consecutive logits from column k on, as acc; columns at or past `end`
// are masked (-inf). With kVec > 1 and the whole vector inside the row, one
// 16-byte load (the launch plan guarantees the alignment).
template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) LogitVector {
  scalar_t values[kVec];
};

template <int kVec, typename scalar_t, typename acc>
__device__ __forceinline__ void load_logits(
    const scalar_t* row,
    int64_t k,
    int64_t end,
    acc* out) {
  if (kVec > 1 && k + kVec <= end) {
    const LogitVector<scalar_t, kVec> v =
        *reinterpret_cast<const LogitVector<scalar_t, kVec>*>(row + k);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      out[j] = static_cast<acc>(v.values[j]);
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    out[j] = k + j < end ? static_cast<acc>(row[k + j])
                         : math::negative_infinity<acc>();
  }
}

// A row per block (or per split of a row): blockDim.x threads, kVec logits
// per load.
template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kMaxBlockThreads)
    forward_row_in_block(ForwardRowsArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  const int64_t block = blockIdx.x;
  if (block >= a.num_logit_blocks) {
    sum_log_std_block(a.log_std, block - a.num_logit_blocks);
    return;
  }
  const int64_t row = block / a.splits;
  const int64_t split = block % a.splits;
  const int64_t begin = split * a.split_cols;
  const int64_t end = begin + a.split_cols < a.num_cols
      ? begin + a.split_cols
      : a.num_cols;
  const scalar_t* z = a.logits + row * a.row_stride;
  const acc lowest = math::lowest_finite<acc>();
  const int64_t vector_stride = static_cast<int64_t>(blockDim.x) * kVec;

  math::SoftmaxState<acc> state = math::empty_softmax_state<acc>();
  for (int64_t first = begin + static_cast<int64_t>(threadIdx.x) * kVec;
       first < end; first += vector_stride * kVectorsPerChunk) {
    acc chunk[kVectorsPerChunk * kVec];
#pragma unroll
    for (int u = 0; u < kVectorsPerChunk; ++u) {
      load_logits<kVec>(z, first + u * vector_stride, end, chunk + u * kVec);
    }
    acc chunk_max = math::negative_infinity<acc>();
#pragma unroll
    for (int j = 0; j < kVectorsPerChunk * kVec; ++j) {
      chunk_max = math::max_of(chunk[j], chunk_max);
    }
    const acc shift = math::row_shift(chunk_max, lowest);
    acc sum_exp = acc(0);
    acc sum_exp_times_shift = acc(0);
#pragma unroll
    for (int j = 0; j < kVectorsPerChunk * kVec; ++j) {
      math::accumulate_softmax_moments(
          chunk[j] - shift, lowest, sum_exp, sum_exp_times_shift);
    }
    state = math::merge_softmax_states(
        state, math::SoftmaxState<acc>{chunk_max, sum_exp, sum_exp_times_shift});
  }
  state = block_merge(state);
  if (threadIdx.x == 0) {
    if (a.splits == 1) {
      const math::RowStatistics<acc> r = math::finish_row(state);
      store_row_statistics(a.row_stats, a.batch, row, r);
      a.entropy_partials[row] = static_cast<double>(r.entropy);
    } else {
      a.split_states[block] = state;
    }
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
  double* entropy_partials = nullptr;
};

template <typename acc>
__global__ void __launch_bounds__(kMergeRowsPerBlock * kWarpSize)
    merge_column_splits(MergeSplitsArgs<acc> a) {
  __shared__ double row_entropies[kMergeRowsPerBlock];
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
  if (lane == 0) {
    if (active) {
      store_row_statistics(a.row_stats, a.batch, row, r);
    }
    row_entropies[warp] = active ? static_cast<double>(r.entropy) : 0.0;
  }
  __syncthreads();
  const double block_sum = tree_sum(row_entropies, kMergeRowsPerBlock);
  if (threadIdx.x == 0) {
    a.entropy_partials[blockIdx.x] = block_sum;
  }
}

// The last kernel: batch means from the partial sums, added in order, and
// the seven outputs from combine_losses (one block).
struct FinishForwardArgs {
  const double* entropy_partials = nullptr;
  int64_t num_entropy_partials = 0;
  const double* log_std_partials = nullptr;
  int64_t num_log_std_partials = 0;
  bool has_discrete = false;
  bool has_continuous = false;
  int64_t batch = 0;  // B of the logits
  // H_c = D * const + (sum of log_std) / log_std_rows: R for [R, D], 1 for
  // a shared [D].
  double log_std_rows = 1.0;
  int64_t log_std_dims = 0;
  Coefficients coeff;
  math::LossParams params{};
  void* outputs[7] = {};  // total, ..., continuous_entropy
  DType output_dtype = DType::kFloat;
};

constexpr int kFinishThreads = 256;

__global__ void __launch_bounds__(kFinishThreads)
    finish_forward(FinishForwardArgs a) {
  const double entropy_sum =
      block_ordered_sum(a.entropy_partials, a.num_entropy_partials);
  const double log_std_sum =
      block_ordered_sum(a.log_std_partials, a.num_log_std_partials);
  if (threadIdx.x != 0) {
    return;
  }
  const double discrete_entropy =
      a.has_discrete ? entropy_sum / static_cast<double>(a.batch) : 0.0;
  const double continuous_entropy = a.has_continuous
      ? math::gaussian_entropy(
            log_std_sum / a.log_std_rows, static_cast<double>(a.log_std_dims))
      : 0.0;
  const math::LossComponents c = math::combine_losses(
      a.coeff.read(), a.has_discrete, discrete_entropy, a.has_continuous,
      continuous_entropy, a.params);
  const double values[7] = {c.total,
                            c.discrete,
                            c.continuous,
                            c.discrete_penalty,
                            c.continuous_penalty,
                            c.discrete_entropy,
                            c.continuous_entropy};
  for (int i = 0; i < 7; ++i) {
    store_from_double(a.outputs[i], a.output_dtype, 0, values[i]);
  }
}

} // namespace cuda
} // namespace hee

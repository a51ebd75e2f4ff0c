// Which kernels the CUDA forward and backward launch, with what shapes, and
// the launches themselves, written once over raw pointers: the ATen glue
// (hybrid_entropy_cuda.cu) launches them on a stream, and
// tests/cuda_emulation/ runs the very same plan and kernels on the host.
//
// A Launch is a callable `launch(kernel, grid_blocks, block_threads, args)`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "backward_kernel.cuh"
#include "device_scalars.cuh"
#include "finish_kernels.cuh"
#include "forward_kernels.cuh"
#include "launch_shapes.h"

namespace hee {
namespace cuda {

// Column splits: only for rows at least this long, at most this many per row
// (a warp merges them), each at least kMinSplitCols long.
constexpr int64_t kMinColsToSplit = 8192;
constexpr int64_t kMaxSplits = kWarpSize;
constexpr int64_t kMinSplitCols = 4096;
// log_std elements per thread of a log_std block.
constexpr int64_t kLogStdPerThread = 16;
// One forward call, as raw pointers on the device.
struct ForwardProblem {
  bool has_discrete = false;
  const void* logits = nullptr;  // [B, K], unit column stride
  DType logits_dtype = DType::kFloat;
  int64_t batch = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  void* row_stats = nullptr;  // [3, B] in the accumulation dtype
  // [B, K] bool, unit column stride, any row stride; nullptr: no mask.
  const bool* allowed = nullptr;
  int64_t allowed_row_stride = 0;
  bool has_continuous = false;
  const void* log_std = nullptr;  // [R, D] contiguous (R = 1: shared)
  DType log_std_dtype = DType::kFloat;
  int64_t log_std_rows = 0;
  int64_t log_std_dims = 0;
  bool per_sample_log_std = false;
  // [B] weights of the rows of the logits and of a per-sample log_std.
  RowWeights row_weights;
  // The caller's denominator of the batch means (absent: the weights' sum,
  // or the row count), and the row count (batch_row_count), which is
  // sum_i c_i without weights.
  DeviceScalar mean_denominator;
  double row_count = 0.0;
  Coefficients coeff;
  math::LossParams params{};
  void* outputs[7] = {};
  DType output_dtype = DType::kFloat;
};

struct ForwardLaunchPlan {
  RowLayout layout = RowLayout::kRowsInWarps;
  int log2_cols = 0;  // rows in warps
  int block_threads = kRowsInWarpsThreads;
  int vec = 1;  // logits per load: 1, or the dtype's 16-byte vector width
  int64_t splits = 1;
  int64_t split_cols = 0;
  int64_t num_logit_blocks = 0;
  int64_t num_entropy_partials = 0;
  int64_t log_std_chunk = 0;
  int64_t num_log_std_blocks = 0;
  int64_t num_split_states = 0;  // B * splits when splits > 1
};

inline ForwardLaunchPlan plan_forward_launch(
    const ForwardProblem& p,
    const DeviceShape& device) {
  ForwardLaunchPlan plan;
  const int vector_width =
      static_cast<int>(kVectorBytes / element_size(p.logits_dtype));
  if (p.has_discrete && p.batch > 0 && p.num_cols > kMaxColsInWarps) {
    plan.layout = RowLayout::kRowInBlock;
    plan.block_threads =
        p.num_cols <= 4096 ? 128 : (p.num_cols <= 16384 ? 256 : kMaxBlockThreads);
    // Rows of any alignment: each peels its first columns (forward_kernels.cuh).
    plan.vec = vector_width;
    // Split the columns when the rows alone would leave most multiprocessors
    // idle.
    const int64_t wanted_blocks = 2 * static_cast<int64_t>(device.multiprocessors);
    if (p.num_cols >= kMinColsToSplit && p.batch < wanted_blocks) {
      const int64_t splits = std::min(
          {ceil_div(wanted_blocks, p.batch), kMaxSplits,
           p.num_cols / kMinSplitCols});
      const int64_t granule = static_cast<int64_t>(plan.vec) * plan.block_threads;
      plan.split_cols =
          ceil_div(ceil_div(p.num_cols, std::max<int64_t>(splits, 1)), granule) *
          granule;
      plan.splits = ceil_div(p.num_cols, plan.split_cols);
    } else {
      plan.split_cols = p.num_cols;
    }
    if (plan.splits > 1) {
      plan.num_logit_blocks = p.batch * plan.splits;  // < 2 * 32 * SMs
      plan.num_entropy_partials = ceil_div(p.batch, kMergeRowsPerBlock);
      plan.num_split_states = p.batch * plan.splits;
    } else {
      plan.num_logit_blocks =
          one_wave_grid(p.batch, plan.block_threads, device);
      plan.num_entropy_partials = plan.num_logit_blocks;
    }
  } else if (p.has_discrete && p.batch > 0) {
    plan.log2_cols = ceil_log2(p.num_cols);
    // A narrower vector where the padded row is shorter than the dtype's.
    const int64_t load_bytes = element_size(p.logits_dtype) *
        std::min<int64_t>(vector_width, int64_t{1} << plan.log2_cols);
    plan.vec = rows_are_vector_aligned(
                   p.logits, p.row_stride, p.logits_dtype, load_bytes)
        ? vector_width
        : 1;
    const RowsInWarpsShape shape = rows_in_warps_shape(plan.log2_cols, plan.vec);
    plan.num_logit_blocks = one_wave_grid(
        ceil_div(p.batch, shape.rows_per_block), kRowsInWarpsThreads, device);
    plan.num_entropy_partials = plan.num_logit_blocks;
  }
  if (p.has_continuous) {
    const int64_t count = p.log_std_rows * p.log_std_dims;
    plan.num_log_std_blocks = one_wave_grid(
        ceil_div(count, kLogStdPerThread * plan.block_threads),
        plan.block_threads, device);
    plan.log_std_chunk = ceil_div(count, plan.num_log_std_blocks);
  }
  return plan;
}

// Device memory the forward needs beside its outputs.
struct ForwardWorkspace {
  double* entropy_partials = nullptr;  // plan.num_entropy_partials
  double* log_std_partials = nullptr;  // plan.num_log_std_blocks
  void* split_states = nullptr;  // plan.num_split_states SoftmaxState<acc>,
                                 // only when rows are split
  double* weight_sum = nullptr;  // one value, only with row weights
};

// The forward's launches of scalar_t logits: rows and log_std, and the merge
// of column splits where there are any.
template <typename scalar_t, typename Launch>
void launch_forward_rows(
    const ForwardProblem& p,
    const ForwardLaunchPlan& plan,
    const ForwardWorkspace& work,
    Launch& launch) {
  using acc = acc_t<scalar_t>;
  ForwardRowsArgs<scalar_t> args;
  args.logits = static_cast<const scalar_t*>(p.logits);
  args.batch = p.has_discrete ? p.batch : 0;
  args.num_cols = p.num_cols;
  args.row_stride = p.row_stride;
  args.row_stats = static_cast<acc*>(p.row_stats);
  args.num_logit_blocks = plan.num_logit_blocks;
  args.entropy_partials = work.entropy_partials;
  args.row_weights = p.row_weights;
  args.splits = plan.splits;
  args.split_cols = plan.split_cols;
  args.split_states = static_cast<math::SoftmaxState<acc>*>(work.split_states);
  args.log_std = {p.log_std, p.log_std_dtype, p.log_std_rows * p.log_std_dims,
                  plan.log_std_chunk, work.log_std_partials,
                  p.per_sample_log_std ? p.row_weights : RowWeights{},
                  p.log_std_dims};
  args.allowed = p.allowed;
  args.allowed_row_stride = p.allowed_row_stride;
  const int64_t grid = plan.num_logit_blocks + plan.num_log_std_blocks;
  dispatch_action_mask(p.allowed != nullptr, [&](auto action_mask_flag) {
    constexpr bool kActionMask = decltype(action_mask_flag)::value;
    constexpr int kVec = kVectorWidth<scalar_t>;
    if (plan.layout == RowLayout::kRowInBlock) {
      launch(
          forward_row_in_block<scalar_t, kVec, kActionMask>, grid,
          plan.block_threads, args);
      return;
    }
    dispatch_log2_cols<kMaxLog2ColsInWarps>(plan.log2_cols, [&](auto log2_cols) {
      constexpr int kLog2Cols = decltype(log2_cols)::value;
      if (plan.vec == kVec) {
        launch(
            forward_rows_in_warps<scalar_t, kLog2Cols, kVec, kActionMask>,
            grid, kRowsInWarpsThreads, args);
      } else {
        launch(
            forward_rows_in_warps<scalar_t, kLog2Cols, 1, kActionMask>, grid,
            kRowsInWarpsThreads, args);
      }
    });
  });
  if (plan.splits > 1) {
    MergeSplitsArgs<acc> merge;
    merge.split_states = args.split_states;
    merge.batch = p.batch;
    merge.splits = plan.splits;
    merge.row_stats = args.row_stats;
    merge.entropy_partials = work.entropy_partials;
    merge.row_weights = p.row_weights;
    launch(
        merge_column_splits<acc>, ceil_div(p.batch, kMergeRowsPerBlock),
        kMergeRowsPerBlock * kWarpSize, merge);
  }
}

// The sum of the row weights into *sum, where there are weights: the
// denominator of the batch means, which the later launches read on the
// device.
template <typename Launch>
void launch_sum_row_weights(
    const RowWeights& weights,
    double* sum,
    Launch& launch) {
  launch(sum_row_weights, 1, kFinishThreads, SumRowWeightsArgs{weights, sum});
}

// The forward: at most three launches (rows and log_std, the merge of
// column splits where there are any, the finish), and with row weights one
// before them (their sum).
template <typename Launch>
void launch_forward(
    const ForwardProblem& p,
    const ForwardLaunchPlan& plan,
    const ForwardWorkspace& work,
    Launch&& launch) {
  const bool weighted = p.row_weights.present();
  if (weighted) {
    launch_sum_row_weights(p.row_weights, work.weight_sum, launch);
  }
  if (p.has_discrete) {
    dispatch_logits_dtype(p.logits_dtype, [&](auto zero) {
      launch_forward_rows<decltype(zero)>(p, plan, work, launch);
    });
  } else {
    // No logits: only the log_std blocks of a rows-in-warps launch run.
    launch_forward_rows<float>(p, plan, work, launch);
  }
  FinishForwardArgs finish;
  finish.entropy_partials = work.entropy_partials;
  finish.num_entropy_partials = plan.num_entropy_partials;
  finish.log_std_partials = work.log_std_partials;
  finish.num_log_std_partials = plan.num_log_std_blocks;
  finish.has_discrete = p.has_discrete;
  finish.has_continuous = p.has_continuous;
  finish.discrete_denominator = weighted
      ? MeanDenominator{work.weight_sum}
      : MeanDenominator{nullptr, static_cast<double>(p.batch)};
  finish.continuous_denominator = !p.per_sample_log_std
      ? MeanDenominator{nullptr, 1.0}
      : weighted ? MeanDenominator{work.weight_sum}
                 : MeanDenominator{nullptr, static_cast<double>(p.log_std_rows)};
  if (p.mean_denominator.values != nullptr) {
    finish.divides_by_given_denominator = true;
    finish.discrete_denominator = {nullptr, 1.0, p.mean_denominator};
    finish.continuous_denominator = {nullptr, 1.0, p.mean_denominator};
    finish.row_weight_sum = weighted ? MeanDenominator{work.weight_sum}
                                     : MeanDenominator{nullptr, p.row_count};
  }
  finish.shared_log_std = !p.per_sample_log_std;
  finish.log_std_dims = p.log_std_dims;
  finish.coeff = p.coeff;
  finish.params = p.params;
  for (int i = 0; i < 7; ++i) {
    finish.outputs[i] = p.outputs[i];
  }
  finish.output_dtype = p.output_dtype;
  launch(finish_forward, 1, kFinishThreads, finish);
}

// The backward of scalar_t logits, one launch. Long rows: a block per row,
// one wave of blocks looping over rows, vectors after each row's peel
// wherever the logits' and the gradient's rows start at the same offset
// within a vector. Otherwise flat: blocks enough to fill the GPU a few times
// over, each thread looping over vectors where K is a multiple of the width
// and both are aligned.
template <typename scalar_t, bool kActionMask, typename Launch>
void launch_backward_logits(
    BackwardProblem p,
    const DeviceShape& device,
    Launch& launch) {
  // Below, a wanted gradient means logits of scalar_t.
  constexpr int kVec = kVectorWidth<scalar_t>;
  const BackwardLayout layout = p.grad_logits != nullptr
      ? backward_layout(
            p.logits, p.row_stride, p.grad_logits, p.num_cols, p.num_cols,
            p.logits_dtype, kVec)
      : BackwardLayout{};
  if (layout.row_per_block) {
    launch(
        backward_logit_rows<scalar_t, kVec, kActionMask>,
        one_wave_grid(p.batch, kBackwardThreads, device), kBackwardThreads, p);
    return;
  }
  const bool vectorized = layout.vectorized;
  const int64_t elements = p.grad_logits != nullptr ? p.batch * p.num_cols : 0;
  const int64_t vectors = vectorized ? elements / kVec : elements;
  const int64_t grid = std::max<int64_t>(
      1,
      std::min(
          ceil_div(vectors, kBackwardThreads),
          16 * static_cast<int64_t>(device.multiprocessors)));
  const bool narrow_index =
      elements < (int64_t{1} << 31);  // flat indices and their steps fit
  if (narrow_index && p.num_cols > 0) {
    p.cols_divider = FastDivider::of(static_cast<uint32_t>(p.num_cols));
  }
  if (vectorized && narrow_index) {
    launch(
        backward_logits<scalar_t, kVec, uint32_t, kActionMask>, grid,
        kBackwardThreads, p);
  } else if (vectorized) {
    launch(
        backward_logits<scalar_t, kVec, int64_t, kActionMask>, grid,
        kBackwardThreads, p);
  } else if (narrow_index) {
    launch(
        backward_logits<scalar_t, 1, uint32_t, kActionMask>, grid,
        kBackwardThreads, p);
  } else {
    launch(
        backward_logits<scalar_t, 1, int64_t, kActionMask>, grid,
        kBackwardThreads, p);
  }
}

// The backward: the launch of the logits' dtype (float without logits: the
// log_std and coefficient gradients only), and with row weights one before
// it (their sum, the denominator of the weighted means, or with a given
// denominator the weight a shared log_std carries).
template <typename Launch>
void launch_backward(
    BackwardProblem p,
    const DeviceShape& device,
    Launch&& launch) {
  if (p.row_weights.present()) {
    launch_sum_row_weights(p.row_weights, p.weight_sum, launch);
    p.discrete_denominator = {p.weight_sum};
    if (p.grad_log_std_rows > 0) {
      p.continuous_denominator = {p.weight_sum};
    }
    p.row_weight_sum = {p.weight_sum};
  }
  if (p.mean_denominator.values != nullptr) {
    p.discrete_denominator = {nullptr, 1.0, p.mean_denominator};
    p.continuous_denominator = {nullptr, 1.0, p.mean_denominator};
  }
  const DType dtype = p.has_discrete ? p.logits_dtype : DType::kFloat;
  dispatch_logits_dtype(dtype, [&](auto zero) {
    dispatch_action_mask(p.allowed != nullptr, [&](auto action_mask_flag) {
      launch_backward_logits<decltype(zero), decltype(action_mask_flag)::value>(
          p, device, launch);
    });
  });
}

} // namespace cuda
} // namespace hee

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
#include <vector>

#include "backward_kernel.cuh"
#include "device_scalars.cuh"
#include "finish_kernels.cuh"
#include "forward_kernels.cuh"
#include "launch_shapes.h"
#include "parameterized_kernels.cuh"

namespace hee {
namespace cuda {

// Column splits: only for rows at least this long, at most this many per row
// (a warp merges them), each at least kMinSplitCols long.
constexpr int64_t kMinColsToSplit = 8192;
constexpr int64_t kMaxSplits = kWarpSize;
constexpr int64_t kMinSplitCols = 4096;
// log_std elements per thread of a log_std block.
constexpr int64_t kLogStdPerThread = 16;
// The most doubles the per-warp sums of a shared parameterized log_std's
// gradient take ([warps, K]): the backward's grid shrinks to stay below.
constexpr int64_t kMaxWarpActionGrads = int64_t{1} << 20;

// One discrete (sub-)head of a call: its columns of the logits, how its
// rows' entropies are normalized, and its collapse threshold (the sub-heads'
// own penalties; a single head's threshold is in the LossParams).
struct DiscreteHead {
  int64_t first_column = 0;
  int64_t num_cols = 0;
  // The normalizer of every row where each row allows all the head's
  // actions (1 without normalization) ...
  double entropy_scale = 1.0;
  // ... or each row's own, under an action mask: a normalized_row_weights
  // launch before the head's rows.
  bool normalizes_rows = false;
  bool has_threshold = false;
  double threshold = 0.0;
};

// One forward call, as raw pointers on the device; head_problem() gives the
// problem of one of its heads' row launches.
struct ForwardProblem {
  bool has_discrete = false;
  const void* logits = nullptr;  // [B, K], unit column stride
  DType logits_dtype = DType::kFloat;
  int64_t batch = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  // [3, pitch] in the accumulation dtype (pitch H * B: sub-head h's rows at
  // h * B; [4, B] with parameterized actions, row 3 each row's h_c).
  void* row_stats = nullptr;
  int64_t stats_pitch = 0;
  // The discrete heads in column order: one of every column without
  // discrete_sizes. has_sub_heads: discrete_sizes given (the finish sums the
  // heads' means and penalties, and writes discrete_entropy_per_head [H]).
  std::vector<DiscreteHead> heads;
  bool has_sub_heads = false;
  void* discrete_entropy_per_head = nullptr;
  // One head's launch: its rows' weights of their entropies (absent: the
  // row weights) and, with sub-heads, where its record goes.
  RowWeights entropy_row_weights;
  SubHeadRecord* head_record = nullptr;
  SubHeadRecord head;
  // Parameterized actions: log_std as action parameters, and H_c the mean
  // of each row's expected action entropy (no Gaussian head of its own).
  bool parameterized = false;
  ActionParams action_params;
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

// The problem of head h's row launch: its columns, its mask's columns, and
// log_std's blocks with head 0 (none with parameterized actions, whose
// continuous head has a launch of its own). Without logits, the call.
inline ForwardProblem head_problem(const ForwardProblem& p, size_t h) {
  ForwardProblem head = p;
  if (!p.has_discrete) {
    return head;
  }
  const DiscreteHead& columns = p.heads[h];
  head.logits = static_cast<const char*>(p.logits) +
      columns.first_column * element_size(p.logits_dtype);
  head.num_cols = columns.num_cols;
  if (p.allowed != nullptr) {
    head.allowed = p.allowed + columns.first_column;
  }
  head.row_stats = static_cast<char*>(p.row_stats) +
      static_cast<int64_t>(h) * p.batch * stats_element_size(p.logits_dtype);
  head.has_continuous = p.has_continuous && h == 0 && !p.parameterized;
  return head;
}

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
// The launches of a whole call: each head's row launch, one after another,
// and with parameterized actions the h_c rows' launch.
struct ForwardLaunches {
  std::vector<ForwardLaunchPlan> heads;
  std::vector<int64_t> first_partial;  // each head's first entropy partial
  int64_t num_entropy_partials = 0;  // all heads'
  // log_std's blocks (head 0's launch), or the h_c rows' blocks.
  int64_t num_continuous_partials = 0;
  int64_t num_split_states = 0;  // the most any head needs (heads run in turn)
  int64_t parameterized_blocks = 0;
  bool normalizes_rows = false;  // some head's rows have their own normalizers
};

inline ForwardLaunches plan_forward_launches(
    const ForwardProblem& p,
    const DeviceShape& device) {
  ForwardLaunches launches;
  const size_t num_heads = p.has_discrete ? p.heads.size() : 1;
  for (size_t h = 0; h < num_heads; ++h) {
    const ForwardLaunchPlan plan =
        plan_forward_launch(head_problem(p, h), device);
    launches.first_partial.push_back(launches.num_entropy_partials);
    launches.num_entropy_partials += plan.num_entropy_partials;
    launches.num_split_states =
        std::max(launches.num_split_states, plan.num_split_states);
    if (h == 0) {
      launches.num_continuous_partials = plan.num_log_std_blocks;
    }
    if (p.has_discrete && p.heads[h].normalizes_rows) {
      launches.normalizes_rows = true;
    }
    launches.heads.push_back(plan);
  }
  if (p.parameterized) {
    launches.parameterized_blocks = one_wave_grid(
        ceil_div(p.batch, kParameterizedWarps), kParameterizedThreads, device);
    launches.num_continuous_partials = launches.parameterized_blocks;
  }
  return launches;
}

// Device memory the forward needs beside its outputs.
struct ForwardWorkspace {
  double* entropy_partials = nullptr;  // launches.num_entropy_partials
  // launches.num_continuous_partials: log_std's sums, or h_c's.
  double* log_std_partials = nullptr;
  void* split_states = nullptr;  // launches.num_split_states
                                 // SoftmaxState<acc>, only when rows are split
  double* weight_sum = nullptr;  // one value, only with row weights
  SubHeadRecord* head_records = nullptr;  // H, only with sub-heads
  double* normalized_row_weights = nullptr;  // [H, B], only where rows
                                             // are normalized
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
  args.stats_pitch = p.stats_pitch;
  args.num_logit_blocks = plan.num_logit_blocks;
  args.entropy_partials = work.entropy_partials;
  args.row_weights = p.entropy_row_weights.present() ? p.entropy_row_weights
                                                     : p.row_weights;
  args.head_record = p.head_record;
  args.head = p.head;
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
    merge.stats_pitch = args.stats_pitch;
    merge.entropy_partials = work.entropy_partials;
    merge.row_weights = args.row_weights;
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

// The launch that writes each of a head's rows' weight of its normalized
// entropy (normalized_row_weights) to `out` [B], before the head's rows in
// either direction; returns those weights as the kernels read them.
template <typename Launch>
RowWeights launch_row_normalizers(
    const bool* head_allowed,
    int64_t allowed_row_stride,
    int64_t head_cols,
    int64_t batch,
    const RowWeights& row_weights,
    double* out,
    Launch& launch) {
  NormalizedRowWeightsArgs args;
  args.allowed = head_allowed;
  args.allowed_row_stride = allowed_row_stride;
  args.num_cols = head_cols;
  args.batch = batch;
  args.row_weights = row_weights;
  args.out = out;
  launch(
      normalized_row_weights, ceil_div(batch, kNormalizedRowsPerBlock),
      kFinishThreads,
      args);
  return {out, DType::kDouble, batch};
}

// The launch of the expected action entropy h_c of every row (parameterized
// actions), after the discrete rows whose statistics it reads.
template <typename Launch>
void launch_expected_action_entropy(
    const ForwardProblem& p,
    const ForwardLaunches& launches,
    const ForwardWorkspace& work,
    Launch& launch) {
  dispatch_logits_dtype(p.logits_dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    using acc = acc_t<scalar_t>;
    ExpectedActionEntropyArgs<scalar_t> args;
    args.logits = static_cast<const scalar_t*>(p.logits);
    args.batch = p.batch;
    args.num_cols = p.num_cols;
    args.row_stride = p.row_stride;
    args.allowed = p.allowed;
    args.allowed_row_stride = p.allowed_row_stride;
    args.row_stats = static_cast<acc*>(p.row_stats);
    args.stats_pitch = p.stats_pitch;
    args.params = p.action_params;
    args.row_weights = p.row_weights;
    args.partials = work.log_std_partials;
    dispatch_action_mask(p.allowed != nullptr, [&](auto action_mask_flag) {
      launch(
          expected_action_entropy_rows<
              scalar_t, decltype(action_mask_flag)::value>,
          launches.parameterized_blocks, kParameterizedThreads, args);
    });
  });
}

// The forward: with row weights their sum first; then each head's launches
// in turn (its rows' normalizers where it has them, its rows and, with head
// 0, log_std; the merge of column splits where there are any); with
// parameterized actions the h_c rows; and the finish.
template <typename Launch>
void launch_forward(
    const ForwardProblem& p,
    const ForwardLaunches& launches,
    const ForwardWorkspace& work,
    Launch&& launch) {
  const bool weighted = p.row_weights.present();
  if (weighted) {
    launch_sum_row_weights(p.row_weights, work.weight_sum, launch);
  }
  for (size_t h = 0; h < launches.heads.size(); ++h) {
    ForwardProblem head = head_problem(p, h);
    ForwardWorkspace head_work = work;
    head_work.entropy_partials += launches.first_partial[h];
    if (p.has_discrete && p.heads[h].normalizes_rows) {
      head.entropy_row_weights = launch_row_normalizers(
          head.allowed, head.allowed_row_stride, head.num_cols, p.batch,
          p.row_weights, work.normalized_row_weights + h * p.batch, launch);
    }
    if (p.has_sub_heads) {
      head.head_record = work.head_records + h;
      head.head = {launches.first_partial[h],
                   launches.heads[h].num_entropy_partials,
                   p.heads[h].entropy_scale, p.heads[h].has_threshold,
                   p.heads[h].threshold};
    }
    if (p.has_discrete) {
      dispatch_logits_dtype(p.logits_dtype, [&](auto zero) {
        launch_forward_rows<decltype(zero)>(
            head, launches.heads[h], head_work, launch);
      });
    } else {
      // No logits: only the log_std blocks of a rows-in-warps launch run.
      launch_forward_rows<float>(head, launches.heads[h], head_work, launch);
    }
  }
  if (p.parameterized) {
    launch_expected_action_entropy(p, launches, work, launch);
  }
  FinishForwardArgs finish;
  finish.entropy_partials = work.entropy_partials;
  finish.num_entropy_partials = launches.num_entropy_partials;
  finish.log_std_partials = work.log_std_partials;
  finish.num_log_std_partials = launches.num_continuous_partials;
  finish.has_discrete = p.has_discrete;
  finish.has_continuous = p.has_continuous;
  finish.discrete_denominator = weighted
      ? MeanDenominator{work.weight_sum}
      : MeanDenominator{nullptr, static_cast<double>(p.batch)};
  finish.continuous_denominator = p.parameterized
      ? finish.discrete_denominator
      : !p.per_sample_log_std ? MeanDenominator{nullptr, 1.0}
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
  if (p.has_discrete && !p.has_sub_heads) {
    finish.discrete_entropy_scale = p.heads[0].entropy_scale;
  }
  if (p.has_sub_heads) {
    finish.head_records = work.head_records;
    finish.num_heads = static_cast<int64_t>(p.heads.size());
    finish.discrete_entropy_per_head = p.discrete_entropy_per_head;
  }
  finish.continuous_is_row_mean = p.parameterized;
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
            p.logits, p.row_stride, p.grad_logits, p.grad_row_stride,
            p.num_cols, p.logits_dtype, kVec)
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

// What a backward call launches beside the problem of its first head: its
// heads, with sub-heads where each one's batch entropy is (the forward's
// discrete_entropy_per_head), and with parameterized actions the action
// parameters and where log_std's gradient goes.
struct BackwardCall {
  std::vector<DiscreteHead> heads;
  bool has_sub_heads = false;
  const void* discrete_entropy_per_head = nullptr;  // [H], strided
  DType per_head_dtype = DType::kFloat;
  int64_t per_head_stride = 1;
  bool parameterized = false;
  ActionParams action_params;
  // log_std's gradient, one value per action: [B, K] or, for a shared
  // [K, P], [K] (summed over warp_action_grads, [warps, K] doubles of
  // workspace). nullptr: not wanted.
  void* grad_actions = nullptr;
  DType grad_actions_dtype = DType::kFloat;
  bool shared_action_params = false;
  double* warp_action_grads = nullptr;
  double* normalized_row_weights = nullptr;  // [H, B] where rows normalize
};

// The grid of the parameterized backward: one wave of row warps, fewer where
// a shared log_std's per-warp sums would pass kMaxWarpActionGrads.
inline int64_t parameterized_backward_grid(
    int64_t batch,
    int64_t num_actions,
    bool sums_over_warps,
    const DeviceShape& device) {
  const int64_t grid = one_wave_grid(
      ceil_div(batch, kParameterizedWarps), kParameterizedThreads, device);
  if (!sums_over_warps) {
    return grid;
  }
  return std::max<int64_t>(
      1,
      std::min(
          grid, kMaxWarpActionGrads / (kParameterizedWarps * num_actions)));
}

// The parameterized backward: the rows' launch, and for a wanted gradient
// of a shared log_std the sum of the warps' sums.
template <typename Launch>
void launch_parameterized_backward(
    const BackwardProblem& p,
    const BackwardCall& call,
    const DeviceShape& device,
    Launch& launch) {
  const bool sums_over_warps =
      call.shared_action_params && call.grad_actions != nullptr;
  const int64_t grid =
      parameterized_backward_grid(p.batch, p.num_cols, sums_over_warps, device);
  dispatch_logits_dtype(p.logits_dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    ParameterizedBackwardArgs<scalar_t> args;
    args.problem = p;
    args.params = call.action_params;
    args.grad_actions = sums_over_warps ? nullptr : call.grad_actions;
    args.grad_actions_dtype = call.grad_actions_dtype;
    args.warp_action_grads = sums_over_warps ? call.warp_action_grads : nullptr;
    dispatch_action_mask(p.allowed != nullptr, [&](auto action_mask_flag) {
      launch(
          parameterized_backward_rows<
              scalar_t, decltype(action_mask_flag)::value>,
          grid, kParameterizedThreads, args);
    });
  });
  if (sums_over_warps) {
    SumActionGradsArgs sum;
    sum.warp_action_grads = call.warp_action_grads;
    sum.num_warps = grid * kParameterizedWarps;
    sum.num_actions = p.num_cols;
    sum.out = call.grad_actions;
    sum.dtype = call.grad_actions_dtype;
    launch(
        sum_action_grads, ceil_div(p.num_cols, kParameterizedThreads),
        kParameterizedThreads, sum);
  }
}

// The backward. With row weights their sum first; then each head in turn:
// its rows' normalizers where it has them, and the launch of its columns
// (the logits' dtype; float without logits: the log_std and coefficient
// gradients only), or with parameterized actions the parameterized rows'
// launches. Head 0's launch writes the log_std and coefficient gradients.
template <typename Launch>
void launch_backward(
    BackwardProblem p,
    const BackwardCall& call,
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
  if (call.parameterized) {
    p.continuous_denominator = p.discrete_denominator;  // H_c is a row mean
  }
  if (p.mean_denominator.values != nullptr) {
    p.discrete_denominator = {nullptr, 1.0, p.mean_denominator};
    p.continuous_denominator = {nullptr, 1.0, p.mean_denominator};
  }
  p.entropy_row_weights = p.row_weights;
  if (call.heads.empty()) {
    // The logits are not read: the log_std and coefficient gradients only.
    launch_backward_logits<float, false>(p, device, launch);
    return;
  }
  const int64_t stats_size = stats_element_size(p.logits_dtype);
  const int64_t logit_size = element_size(p.logits_dtype);
  for (size_t h = 0; h < call.heads.size(); ++h) {
    const DiscreteHead& columns = call.heads[h];
    BackwardProblem head = p;
    head.logits = static_cast<const char*>(p.logits) +
        columns.first_column * logit_size;
    head.num_cols = columns.num_cols;
    head.row_stats = static_cast<const char*>(p.row_stats) +
        static_cast<int64_t>(h) * p.batch * stats_size;
    if (p.grad_logits != nullptr) {
      head.grad_logits = static_cast<char*>(p.grad_logits) +
          columns.first_column * logit_size;
    }
    if (p.allowed != nullptr) {
      head.allowed = p.allowed + columns.first_column;
    }
    head.entropy_scale = columns.entropy_scale;
    if (columns.normalizes_rows) {
      head.entropy_row_weights = launch_row_normalizers(
          head.allowed, head.allowed_row_stride, head.num_cols, p.batch,
          p.row_weights, call.normalized_row_weights + h * p.batch, launch);
    }
    if (call.has_sub_heads) {
      head.is_sub_head = true;
      head.head_has_threshold = columns.has_threshold;
      head.head_threshold = columns.threshold;
      head.head_entropy = {
          static_cast<const char*>(call.discrete_entropy_per_head) +
              static_cast<int64_t>(h) * call.per_head_stride *
                  element_size(call.per_head_dtype),
          call.per_head_dtype};
    }
    if (h > 0) {
      head.grad_log_std = nullptr;
      head.grad_coeff = nullptr;
    }
    if (call.parameterized) {
      launch_parameterized_backward(head, call, device, launch);
      continue;
    }
    dispatch_logits_dtype(p.logits_dtype, [&](auto zero) {
      dispatch_action_mask(head.allowed != nullptr, [&](auto action_mask_flag) {
        launch_backward_logits<
            decltype(zero), decltype(action_mask_flag)::value>(
            head, device, launch);
      });
    });
  }
}

} // namespace cuda
} // namespace hee

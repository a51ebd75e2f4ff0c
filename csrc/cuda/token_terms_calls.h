// The CUDA forward and backward of log_prob_and_entropy from their ATen
// arguments, written over a Device as loss_calls.h is (the CUDA one in
// token_terms_cuda.cu, a host one in tests/cuda_emulation/): the plan
// (token_terms_plan.h) checks and says what to allocate, this file chooses
// the kernels of token_terms_kernels.cuh and launches them. Nothing is read
// back to the host.
#pragma once

#include <ATen/ATen.h>

#include <type_traits>

#include "../token_terms_op.h"
#include "../token_terms_plan.h"
#include "launch_shapes.h"
#include "token_terms_kernels.cuh"

namespace hee {
namespace cuda {

// The forward's kernel and shape.
struct TokenForwardLaunch {
  RowLayout layout = RowLayout::kRowsInWarps;
  int log2_cols = 0;  // rows in warps
  int vec = 1;  // logits per load
  int block_threads = kRowsInWarpsThreads;
  int64_t grid = 1;
};

inline TokenForwardLaunch plan_token_forward_launch(
    int64_t num_rows,
    int64_t num_cols,
    const void* logits,
    int64_t row_stride,
    DType dtype,
    const DeviceShape& device) {
  TokenForwardLaunch plan;
  const int vector_width = static_cast<int>(kVectorBytes / element_size(dtype));
  if (num_cols > kMaxColsInWarps) {
    // As the hybrid loss's forward: rows of any alignment peel to a vector
    // boundary. Rows are not split over blocks: a batch of tokens has rows
    // enough to fill the GPU.
    plan.layout = RowLayout::kRowInBlock;
    plan.block_threads =
        num_cols <= 4096 ? 128 : (num_cols <= 16384 ? 256 : kMaxBlockThreads);
    plan.vec = vector_width;
    plan.grid = one_wave_grid(num_rows, plan.block_threads, device);
    return plan;
  }
  plan.log2_cols = ceil_log2(num_cols);
  const int64_t load_bytes = element_size(dtype) *
      std::min<int64_t>(vector_width, int64_t{1} << plan.log2_cols);
  plan.vec = rows_are_vector_aligned(logits, row_stride, dtype, load_bytes)
      ? vector_width
      : 1;
  const RowsInWarpsShape shape = rows_in_warps_shape(plan.log2_cols, plan.vec);
  plan.grid = one_wave_grid(
      ceil_div(num_rows, shape.rows_per_block), kRowsInWarpsThreads, device);
  return plan;
}

// Sub-head h's columns of the rows (all of them for one head) and its actions.
template <typename scalar_t>
void set_head_rows(TokenHeadRows<scalar_t>& view, const TokenRows& rows, int64_t h) {
  const DiscreteSubHead& head = rows.heads[h];
  view.logits = rows.logits.const_data_ptr<scalar_t>() + head.first_column;
  view.num_rows = rows.num_rows();
  view.num_cols = head.num_columns;
  view.row_stride = rows.logits.stride(0);
  view.scale = static_cast<acc_t<scalar_t>>(rows.scale);
  if (rows.actions.defined()) {
    view.actions = rows.actions.const_data_ptr<int64_t>() + h;
    view.action_stride = rows.num_action_columns();
  }
  if (rows.action_mask.defined()) {
    view.allowed = rows.action_mask.const_data_ptr<bool>() + head.first_column;
    view.allowed_row_stride = rows.action_mask.stride(0);
  }
}

// Launches the forward's kernels of `launch` on one head's rows.
template <typename scalar_t, typename Device>
void launch_token_forward(
    const Device& device,
    const TokenForwardLaunch& launch,
    const TokenForwardArgs<scalar_t>& a,
    bool has_action_mask) {
  dispatch_action_mask(has_action_mask, [&](auto action_mask_flag) {
    constexpr bool kActionMask = decltype(action_mask_flag)::value;
    constexpr int kVec = kVectorWidth<scalar_t>;
    if (launch.layout == RowLayout::kRowInBlock) {
      device(
          token_forward_row_in_block<scalar_t, kVec, kActionMask>,
          launch.grid, launch.block_threads, a);
      return;
    }
    dispatch_log2_cols<kMaxLog2ColsInWarps>(
        launch.log2_cols, [&](auto log2_cols) {
          constexpr int kLog2Cols = decltype(log2_cols)::value;
          if (launch.vec == kVec) {
            device(
                token_forward_rows_in_warps<
                    scalar_t, kLog2Cols, kVec, kActionMask>,
                launch.grid, kRowsInWarpsThreads, a);
          } else {
            device(
                token_forward_rows_in_warps<
                    scalar_t, kLog2Cols, 1, kActionMask>,
                launch.grid, kRowsInWarpsThreads, a);
          }
        });
  });
}

// The forward; `launched`, where given, receives the launch of the last
// sub-head (the only one without discrete_sizes).
template <typename Device>
TokenTermsOutputs token_terms_forward_on(
    const Device& device,
    const at::Tensor& logits,
    const OptionalTensor& actions,
    const OptionalTensor& mask,
    double temperature,
    const OptionalTensor& action_mask,
    at::OptionalIntArrayRef discrete_sizes,
    TokenForwardLaunch* launched = nullptr) {
  const TokenTermsForwardPlan plan = plan_token_terms_forward(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  at::Tensor log_prob = device.empty(plan.log_prob);
  at::Tensor entropy = device.empty(plan.entropy);
  at::Tensor row_stats = device.empty(plan.row_stats);
  const TokenRows rows = token_rows_for_kernels(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  if (rows.num_rows() == 0) {
    return {log_prob, entropy, row_stats};
  }
  const DType dtype = dtype_of(logits.scalar_type());
  const int64_t N = rows.num_rows();
  const int64_t num_heads = plan.num_heads;
  // With sub-heads each head's kernels write its terms to a row of these,
  // summed into the outputs after the last head (one head writes the outputs).
  const at::Tensor head_log_prob = plan.has_actions && num_heads > 1
      ? device.empty(plan.head_terms)
      : at::Tensor();
  const at::Tensor head_entropy =
      num_heads > 1 ? device.empty(plan.head_terms) : at::Tensor();
  dispatch_logits_dtype(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    using acc = acc_t<scalar_t>;
    for (int64_t h = 0; h < num_heads; ++h) {
      TokenForwardArgs<scalar_t> a;
      set_head_rows(a, rows, h);
      a.mask = plan.has_mask ? rows.mask.const_data_ptr<bool>() : nullptr;
      if (num_heads == 1) {
        a.log_prob = plan.has_actions ? log_prob.mutable_data_ptr<acc>() : nullptr;
        a.entropy = entropy.mutable_data_ptr<acc>();
      } else {
        a.log_prob = plan.has_actions
            ? head_log_prob.mutable_data_ptr<acc>() + h * N
            : nullptr;
        a.entropy = head_entropy.mutable_data_ptr<acc>() + h * N;
      }
      a.row_stats = row_stats.mutable_data_ptr<acc>() + h * N;
      a.stats_pitch = num_heads * N;
      const TokenForwardLaunch launch = plan_token_forward_launch(
          N, a.num_cols, a.logits, a.row_stride, dtype, device.shape());
      if (launched != nullptr) {
        *launched = launch;
      }
      launch_token_forward(device, launch, a, plan.has_action_mask);
    }
  });
  if (num_heads > 1) {
    // A sample's terms are its sub-heads' sums (SB3's MultiCategorical).
    at::Tensor entropy_rows = entropy.view({N});
    at::sum_out(entropy_rows, head_entropy, 0);
    if (plan.has_actions) {
      at::Tensor log_prob_rows = log_prob.view({N});
      at::sum_out(log_prob_rows, head_log_prob, 0);
    }
  }
  return {log_prob, entropy, row_stats};
}

// The backward's launch, chosen as the hybrid loss's (launch_plan.h,
// launch_backward_logits): a block per long row where the logits' and the
// gradient's rows start at the same offset within a vector, else flat.
template <typename scalar_t, bool kActionMask, typename Device>
void launch_token_backward(
    const Device& device,
    TokenBackwardArgs<scalar_t> a) {
  constexpr int kVec = kVectorWidth<scalar_t>;
  const DeviceShape shape = device.shape();
  const BackwardLayout layout = backward_layout(
      a.logits, a.row_stride, a.grad_logits, a.grad_row_stride, a.num_cols,
      dtype_of(c10::CppTypeToScalarType<scalar_t>::value), kVec);
  if (layout.row_per_block) {
    device(
        token_backward_rows<scalar_t, kVec, kActionMask>,
        one_wave_grid(a.num_rows, kBackwardThreads, shape), kBackwardThreads,
        a);
    return;
  }
  const bool vectorized = layout.vectorized;
  const int64_t elements = a.num_rows * a.num_cols;
  const int64_t vectors = vectorized ? elements / kVec : elements;
  const int64_t grid = std::max<int64_t>(
      1,
      std::min(
          ceil_div(vectors, kBackwardThreads),
          16 * static_cast<int64_t>(shape.multiprocessors)));
  const bool narrow_index = elements < (int64_t{1} << 31);
  if (narrow_index) {
    a.cols_divider = FastDivider::of(static_cast<uint32_t>(a.num_cols));
  }
  if (vectorized && narrow_index) {
    device(
        token_backward_flat<scalar_t, kVec, uint32_t, kActionMask>, grid,
        kBackwardThreads, a);
  } else if (vectorized) {
    device(
        token_backward_flat<scalar_t, kVec, int64_t, kActionMask>, grid,
        kBackwardThreads, a);
  } else if (narrow_index) {
    device(
        token_backward_flat<scalar_t, 1, uint32_t, kActionMask>, grid,
        kBackwardThreads, a);
  } else {
    device(
        token_backward_flat<scalar_t, 1, int64_t, kActionMask>, grid,
        kBackwardThreads, a);
  }
}

template <typename Device>
at::Tensor token_terms_backward_on(
    const Device& device,
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
  at::Tensor grad_logits = device.empty(spec);
  const TokenRows rows = token_rows_for_kernels(
      logits, actions, mask, temperature, action_mask, discrete_sizes);
  if (rows.num_rows() == 0) {
    return grad_logits;
  }
  const at::ScalarType acc_dtype = row_stats.scalar_type();
  const at::Tensor grad_entropy_rows = per_row_grad(
      grad_entropy, rows.num_rows(), rows.scale, acc_dtype, logits.device());
  const at::Tensor grad_log_prob_rows = grad_log_prob.has_value()
      ? per_row_grad(grad_log_prob, rows.num_rows(), rows.scale, acc_dtype,
                     logits.device())
      : at::Tensor();
  const int64_t N = rows.num_rows();
  const int64_t num_heads = static_cast<int64_t>(rows.heads.size());
  dispatch_logits_dtype(dtype_of(logits.scalar_type()), [&](auto zero) {
    using scalar_t = decltype(zero);
    using acc = acc_t<scalar_t>;
    // Each sub-head's gradient goes straight into its columns: the upstream
    // gradients are the sums', shared by the heads.
    for (int64_t h = 0; h < num_heads; ++h) {
      TokenBackwardArgs<scalar_t> a;
      set_head_rows(a, rows, h);
      a.row_stats = row_stats.const_data_ptr<acc>() + h * N;
      a.stats_pitch = num_heads * N;
      a.grad_entropy = grad_entropy_rows.const_data_ptr<acc>();
      if (grad_log_prob_rows.defined()) {
        a.grad_log_prob = grad_log_prob_rows.const_data_ptr<acc>();
      } else {
        a.actions = nullptr;  // the taken actions matter only with g_a
      }
      a.mask = rows.mask.defined() ? rows.mask.const_data_ptr<bool>() : nullptr;
      a.grad_logits = grad_logits.mutable_data_ptr<scalar_t>() +
          rows.heads[h].first_column;
      a.grad_row_stride = rows.num_cols();
      dispatch_action_mask(rows.action_mask.defined(), [&](auto action_mask_flag) {
        launch_token_backward<scalar_t, decltype(action_mask_flag)::value>(
            device, a);
      });
    }
  });
  return grad_logits;
}

} // namespace cuda
} // namespace hee

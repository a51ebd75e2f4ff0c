// The CUDA kernels of the backward: one launch that reads the logits once and
// writes their gradient once, in 16-byte vectors where aligned: flat over
// the logits for short rows, a row per block (peeling to alignment) for long
// ones. The gradient scales come from the 0-dim values on the device
// (upstream gradients, batch-mean entropies, the coefficient) through
// combine_losses_backward, so nothing is read back to the host: one thread
// per block derives them, and the first block's also writes the log_std and
// coefficient gradients.
#pragma once

#include <cstdint>

#include "device_scalars.cuh"
#include "forward_kernels.cuh"

namespace hee {
namespace cuda {

constexpr int kBackwardThreads = 256;

// n / d for n < 2^31 and 1 <= d < 2^31 as a multiply-high, an add and a
// shift (Granlund and Montgomery's method, as PyTorch's IntDivider): the
// magic number and the shift are found once, on the host.
struct FastDivider {
  uint32_t magic = 1;
  uint32_t shift = 0;

  static FastDivider of(uint32_t divisor) {
    FastDivider d;
    while (d.shift < 32 && (uint64_t{1} << d.shift) < divisor) {
      ++d.shift;
    }
    const uint64_t one = 1;
    d.magic = static_cast<uint32_t>(
        ((one << 32) * ((one << d.shift) - divisor)) / divisor + 1);
    return d;
  }

  HEE_HOST_DEVICE uint32_t divide(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(n, magic);
#else
    const uint32_t high =
        static_cast<uint32_t>((static_cast<uint64_t>(n) * magic) >> 32);
#endif
    return (high + n) >> shift;
  }
};

// One backward call, as raw pointers on the device: the kernel's argument.
struct BackwardProblem {
  bool has_discrete = false;
  bool has_continuous = false;
  const void* logits = nullptr;  // [B, K], unit column stride
  DType logits_dtype = DType::kFloat;
  int64_t batch = 0;
  int64_t num_cols = 0;
  int64_t row_stride = 0;
  // [3, pitch] in the accumulation dtype (pitch >= B: a sub-head's rows
  // start at its offset in the [3, H * B] of all sub-heads; [4, B] with
  // parameterized actions).
  const void* row_stats = nullptr;
  int64_t stats_pitch = 0;
  // [B, K] with row pitch grad_row_stride (K, or the logits' whole width
  // for a sub-head's columns); nullptr: not wanted.
  void* grad_logits = nullptr;
  int64_t grad_row_stride = 0;
  FastDivider cols_divider;  // by K, for flat indices below 2^31
  // The batch means' denominators, for the chain rule through them: their
  // count of terms (loss_plan.h), or the sum of the row weights.
  MeanDenominator discrete_denominator;
  MeanDenominator continuous_denominator;
  // [B] weights of the rows; with them each row's gradient is weighed, and
  // a per-sample log_std gets one gradient per row.
  RowWeights row_weights;
  double* weight_sum = nullptr;  // one value, only with row weights
  // Each row's weight of its entropy: the row weights, times each row's
  // normalizer where the entropy is normalized under an action mask; and
  // the normalizer of every row otherwise (1 without normalization).
  RowWeights entropy_row_weights;
  double entropy_scale = 1.0;
  // A sub-head (discrete_sizes): its threshold and its batch entropy H_h
  // (the forward's discrete_entropy_per_head[h]); params then carry no
  // discrete threshold (math::sub_head_entropy_grad).
  bool is_sub_head = false;
  bool head_has_threshold = false;
  double head_threshold = 0.0;
  DeviceScalar head_entropy;
  // The caller's denominator of the batch means, where given (both
  // denominators above are then it). A log_std gradient returned as one
  // value then carries the weight of the rows it stands for
  // (math::broadcast_term_grad): sum_i c_i (the row count, or the weights'
  // sum) over log_std_count, the count of its rows.
  DeviceScalar mean_denominator;
  MeanDenominator row_weight_sum;
  double log_std_count = 1.0;
  // One element (returned broadcast), or grad_log_std_rows elements.
  void* grad_log_std = nullptr;
  DType grad_log_std_dtype = DType::kFloat;
  int64_t grad_log_std_rows = 0;  // 0: one value
  void* grad_coeff = nullptr;  // 0-dim, or [2] for per-head coefficients
  DType grad_coeff_dtype = DType::kFloat;
  DeviceScalar upstream[7];  // gradients of the seven outputs
  DeviceScalar discrete_entropy;
  DeviceScalar continuous_entropy;
  Coefficients coeff;
  math::LossParams params{};
  // [B, K] with unit column stride and any row stride (0 broadcasts one
  // row); read by the kActionMask kernels only.
  const bool* allowed = nullptr;
  int64_t allowed_row_stride = 0;
};

__device__ __forceinline__ math::LossGrads upstream_grads(
    const BackwardProblem& a) {
  math::LossGrads g;
  g.total = a.upstream[0].read();
  g.discrete = a.upstream[1].read();
  g.continuous = a.upstream[2].read();
  g.discrete_penalty = a.upstream[3].read();
  g.continuous_penalty = a.upstream[4].read();
  g.discrete_entropy = a.upstream[5].read();
  g.continuous_entropy = a.upstream[6].read();
  return g;
}

__device__ __forceinline__ math::BatchEntropyGrads batch_entropy_grads(
    const BackwardProblem& a,
    const math::LossGrads& g) {
  return math::combine_losses_backward(
      a.coeff.read(), a.has_discrete, a.discrete_entropy.read(),
      a.has_continuous, a.continuous_entropy.read(), a.params, g);
}

// The scale of the logits' gradient: d total / d H_d (or d H_h of a
// sub-head) over the mean's denominator, in double (grad_per_term) and in
// acc (scale); a weighted row's is grad_per_term times its weight
// (math::weighted_term_grad). continuous_grad_per_term: d total / d H_c over
// its denominator, which parameterized actions weigh per row alike.
template <typename acc>
struct GradScale {
  acc scale;
  double grad_per_term;
  double continuous_grad_per_term;

  __device__ __forceinline__ acc row_scale(
      const RowWeights& weights,
      int64_t row) const {
    return weights.present()
        ? static_cast<acc>(
              math::weighted_term_grad(grad_per_term, weights.at(row)))
        : scale;
  }
  __device__ __forceinline__ acc continuous_row_scale(
      const RowWeights& weights,
      int64_t row) const {
    return static_cast<acc>(math::weighted_term_grad(
        continuous_grad_per_term,
        weights.present() ? weights.at(row) : 1.0));
  }
};

// The logits' gradient scale in every thread of the block: one thread
// derives the scales (about a dozen scalar reads and double arithmetic) and
// shares the logits' one; the first block's also writes the log_std and
// coefficient gradients. Every thread must call it.
template <typename acc>
__device__ __forceinline__ GradScale<acc> block_grad_scale(
    const BackwardProblem& a) {
  __shared__ GradScale<acc> shared_scale;
  if (threadIdx.x == 0) {
    const math::LossGrads g = upstream_grads(a);
    const math::BatchEntropyGrads grads = batch_entropy_grads(a, g);
    const double head_grad = a.is_sub_head
        ? math::sub_head_entropy_grad(
              grads.discrete_entropy, a.params.penalty_multiplier,
              a.head_has_threshold, a.head_threshold, a.head_entropy.read(), g)
        : grads.discrete_entropy;
    const double grad_per_term = math::weighted_term_grad(
        math::mean_term_grad(head_grad, a.discrete_denominator.read()),
        a.entropy_scale);
    shared_scale = {
        static_cast<acc>(grad_per_term), grad_per_term,
        math::mean_term_grad(
            grads.continuous_entropy, a.continuous_denominator.read())};
    if (blockIdx.x == 0) {
      if (a.grad_log_std != nullptr && a.grad_log_std_rows == 0) {
        store_from_double(
            a.grad_log_std, a.grad_log_std_dtype, 0,
            a.mean_denominator.values != nullptr
                ? math::broadcast_term_grad(
                      grads.continuous_entropy,
                      a.continuous_denominator.read(),
                      a.row_weight_sum.read(), a.log_std_count)
                : math::mean_term_grad(
                      grads.continuous_entropy,
                      a.continuous_denominator.read()));
      }
      if (a.grad_coeff != nullptr && a.coeff.per_head) {
        store_from_double(
            a.grad_coeff, a.grad_coeff_dtype, 0, grads.coeff.discrete);
        store_from_double(
            a.grad_coeff, a.grad_coeff_dtype, 1, grads.coeff.continuous);
      } else if (a.grad_coeff != nullptr) {
        store_from_double(
            a.grad_coeff, a.grad_coeff_dtype, 0,
            grads.coeff.discrete + grads.coeff.continuous);
      }
    }
  }
  __syncthreads();
  if (blockIdx.x == 0 && a.grad_log_std != nullptr) {
    for (int64_t row = threadIdx.x; row < a.grad_log_std_rows;
         row += blockDim.x) {
      store_from_double(
          a.grad_log_std, a.grad_log_std_dtype, row,
          math::weighted_term_grad(
              shared_scale.continuous_grad_per_term, a.row_weights.at(row)));
    }
  }
  return shared_scale;
}

// The gradient of one logit of a row.
template <typename acc, typename scalar_t>
__device__ __forceinline__ scalar_t logit_grad(
    acc logit,
    acc shift,
    acc log_sum_exp,
    acc entropy,
    acc scale) {
  return static_cast<scalar_t>(math::entropy_grad_element<math::FastExp>(
      logit, shift, log_sum_exp, entropy, scale,
      math::log_probability_floor<acc>()));
}

// Flat over the logits, for rows too short for a block each. index_t:
// uint32_t when every flat index fits, else int64_t (the row of an element
// is then a division; with uint32_t, a multiply-high).
template <typename scalar_t, int kVec, typename index_t, bool kActionMask>
__global__ void __launch_bounds__(kBackwardThreads)
    backward_logits(BackwardProblem a) {
  using acc = acc_t<scalar_t>;
  const GradScale<acc> grad_scale = block_grad_scale<acc>(a);
  if (a.grad_logits == nullptr) {
    return;
  }
  const scalar_t* logits = static_cast<const scalar_t*>(a.logits);
  const acc* row_stats = static_cast<const acc*>(a.row_stats);
  scalar_t* grad_logits = static_cast<scalar_t*>(a.grad_logits);
  const index_t cols = static_cast<index_t>(a.num_cols);
  const index_t num_vectors =
      static_cast<index_t>(a.batch * a.num_cols / kVec);
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t v = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       v < num_vectors; v += stride) {
    // kVec divides K (launch plan), so a vector never crosses a row.
    const index_t element = v * kVec;
    index_t row;
    if constexpr (sizeof(index_t) == sizeof(uint32_t)) {
      row = a.cols_divider.divide(element);
    } else {
      row = element / cols;
    }
    const index_t col = element - row * cols;
    const scalar_t* z = logits + static_cast<int64_t>(row) * a.row_stride;
    acc values[kVec];
    load_logit_vector<kVec>(z, static_cast<int64_t>(col), values);
    allowed_actions<kActionMask>(a, static_cast<int64_t>(row))
        .template apply<kVec>(static_cast<int64_t>(col), a.num_cols, values);
    const acc shift = row_stats[row];
    const acc log_sum_exp = row_stats[a.stats_pitch + row];
    const acc entropy = row_stats[2 * a.stats_pitch + row];
    const acc scale = grad_scale.row_scale(a.entropy_row_weights, row);
    LogitVector<scalar_t, kVec> out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      out.values[j] = logit_grad<acc, scalar_t>(
          values[j], shift, log_sum_exp, entropy, scale);
    }
    *reinterpret_cast<LogitVector<scalar_t, kVec>*>(
        grad_logits + static_cast<int64_t>(row) * a.grad_row_stride + col) =
        out;
  }
}

// A row per block, for long rows, looping over rows: the row's statistics
// are read once, and the columns before the first vector boundary (a peel)
// and after the last whole vector (a tail) go one per thread, so that rows
// of any length and stride (an odd vocabulary, a slice) keep vector loads
// and stores. The launch plan launches it only for a wanted gradient whose
// rows start at the same offset within a vector as the logits' rows.
template <typename scalar_t, int kVec, bool kActionMask>
__global__ void __launch_bounds__(kBackwardThreads)
    backward_logit_rows(BackwardProblem a) {
  using acc = acc_t<scalar_t>;
  const GradScale<acc> grad_scale = block_grad_scale<acc>(a);
  const acc* row_stats = static_cast<const acc*>(a.row_stats);
  const int64_t cols = a.num_cols;
  for (int64_t row = blockIdx.x; row < a.batch; row += gridDim.x) {
    const scalar_t* z = static_cast<const scalar_t*>(a.logits) + row * a.row_stride;
    scalar_t* g =
        static_cast<scalar_t*>(a.grad_logits) + row * a.grad_row_stride;
    const acc shift = row_stats[row];
    const acc log_sum_exp = row_stats[a.stats_pitch + row];
    const acc entropy = row_stats[2 * a.stats_pitch + row];
    const acc scale = grad_scale.row_scale(a.entropy_row_weights, row);
    const auto allowed = allowed_actions<kActionMask>(a, row);
    const int64_t misaligned_by = static_cast<int64_t>(
        reinterpret_cast<uintptr_t>(z) % sizeof(LogitVector<scalar_t, kVec>) /
        sizeof(scalar_t));
    const int64_t peel = misaligned_by == 0
        ? 0
        : (kVec - misaligned_by < cols ? kVec - misaligned_by : cols);
    const int64_t vectors = (cols - peel) / kVec;
    const int64_t tail_begin = peel + vectors * kVec;
    for (int64_t c = threadIdx.x; c < peel + (cols - tail_begin);
         c += blockDim.x) {
      const int64_t col = c < peel ? c : tail_begin + (c - peel);
      g[col] = logit_grad<acc, scalar_t>(
          allowed_logit_at(allowed, col, static_cast<acc>(z[col])), shift,
          log_sum_exp, entropy, scale);
    }
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      const int64_t col = peel + v * kVec;
      acc values[kVec];
      load_logit_vector<kVec>(z, col, values);
      allowed.template apply<kVec>(col, cols, values);
      LogitVector<scalar_t, kVec> out;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        out.values[j] = logit_grad<acc, scalar_t>(
            values[j], shift, log_sum_exp, entropy, scale);
      }
      *reinterpret_cast<LogitVector<scalar_t, kVec>*>(g + col) = out;
    }
  }
}

} // namespace cuda
} // namespace hee

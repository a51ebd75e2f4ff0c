// Vectorized per-row entropy kernels. Included once by each
// row_kernels_<isa>.cpp, which defines HEE_ISA (the namespace) and is
// compiled with that ISA's flags and CPU_CAPABILITY_* macros, so that
// at::vec::Vectorized maps to its intrinsics.
//
// Two layouts of the work:
// - rows in lanes (forward for K <= kMaxRowsInLanesCols, backward for rows of
//   at most half a vector, on AVX2 for rows shorter than a vector): a tile of
//   W rows is transposed into a small column-major buffer, and each SIMD lane
//   carries one row through max / exp / log. Short rows would otherwise leave
//   most lanes idle and pay a horizontal reduction per row.
// - rows along lanes (longer rows): each row is laid along the vectors and
//   swept twice while it sits in L1 (max, then the exp moments), so memory
//   sees one read of the logits.
#ifndef HEE_ISA
#error "define HEE_ISA (the ISA namespace) before including row_kernels_impl.h"
#endif

#include "x86_intrinsics.h"  // first: see there

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "../entropy_math.h"
#include "lane_reduce.h"
#include "row_kernels.h"
#include "simd_math.h"
#include "tile_transpose.h"
#include "vector_math.h"


namespace hee {
namespace cpu {
namespace HEE_ISA {
namespace {

using at::vec::Vectorized;
using math::accumulate_softmax_moments;
using math::clamped_log_prob;
using math::entropy_grad_element;
using math::log_probability_floor;
using math::lowest_finite;
using math::parameterized_grad_element;
using math::parameterized_row_offset;
using math::row_entropy_from_moments;
using math::row_shift;
using math::row_sum_exp;
using math::token_terms_grad_element;
using math::token_terms_row_offset;

constexpr int64_t kMaxRowsInLanesCols = 32;
// Rows whose moments are computed side by side in the rows-along-lanes forward.
// Two with AVX2: four rows' accumulators and shifts beside the exp's constants
// are more than its 16 vector registers hold, and the spills cost more than
// the shared lane reduction of four rows saves (benchmarks/README.md, "Row
// kernels"); AVX-512 has 32.
#if defined(CPU_CAPABILITY_AVX2)
constexpr int kInterleavedRows = 2;
#else
constexpr int kInterleavedRows = 4;
#endif
// The rows-along-lanes forward asks for the row this far ahead while reading a
// row: interleaved rows are several streams at once, which the hardware
// prefetcher follows poorly once the logits are out of cache
// (benchmarks/README.md, "Row kernels").
constexpr int64_t kPrefetchRowsAhead = 16;
// Rows of at most this many vectors take the per-token backward's branch-free
// path for the taken action's term.
constexpr int64_t kShortRowVectors = 4;

template <typename scalar_t>
using AccVec = Vectorized<acc_t<scalar_t>>;

// 16-bit floats, a whole vector at a time: one conversion each way
// (vcvtph2ps / vcvtps2ph for float16, shifts for bfloat16). Converted element
// by element through a stack buffer instead, the vector reload of the buffer
// waits on store forwarding, a stall for every vector of 16-bit logits
// (benchmarks/README.md, "16-bit conversions").
template <typename scalar_t>
constexpr bool converts_whole_vectors() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  return std::is_same_v<scalar_t, c10::Half> ||
      std::is_same_v<scalar_t, c10::BFloat16>;
#else
  return false;
#endif
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
inline Vectorized<float> load_whole_vector(const float* src) {
  return Vectorized<float>::loadu(src);
}
inline Vectorized<float> load_whole_vector(const c10::Half* src) {
  Vectorized<float> v;
  at::vec::load_fp32_from_fp16(src, v);
  return v;
}
inline Vectorized<float> load_whole_vector(const c10::BFloat16* src) {
  Vectorized<float> v;
  at::vec::load_fp32_from_bf16(src, v);
  return v;
}
// Both conversions round to nearest even, as c10::Half and c10::BFloat16 do.
#if defined(CPU_CAPABILITY_AVX512)
inline void store_whole_vector(const Vectorized<float>& v, c10::Half* dst) {
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(dst), at::vec::cvtfp32_fp16(__m512(v)));
}
inline void store_whole_vector(const Vectorized<float>& v, c10::BFloat16* dst) {
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(dst), at::vec::cvtfp32_bf16(__m512(v)));
}
#else
inline void store_whole_vector(const Vectorized<float>& v, c10::Half* dst) {
  _mm_storeu_si128(
      reinterpret_cast<__m128i*>(dst), at::vec::cvtfp32_fp16(__m256(v)));
}
inline void store_whole_vector(const Vectorized<float>& v, c10::BFloat16* dst) {
  _mm_storeu_si128(
      reinterpret_cast<__m128i*>(dst), at::vec::cvtfp32_bf16(__m256(v)));
}
#endif
#endif

// Loads `count` (<= lane count) values as the accumulation type; missing
// lanes are 0.
template <typename scalar_t>
inline AccVec<scalar_t> load_acc(const scalar_t* src, int64_t count) {
  using Vec = AccVec<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, acc_t<scalar_t>>) {
    return count == Vec::size() ? Vec::loadu(src) : Vec::loadu(src, count);
  } else {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    if constexpr (converts_whole_vectors<scalar_t>()) {
      if (count == Vec::size()) {
        return load_whole_vector(src);
      }
    }
#endif
    alignas(64) acc_t<scalar_t> buffer[Vec::size()] = {};
    for (int64_t i = 0; i < count; ++i) {
      buffer[i] = static_cast<acc_t<scalar_t>>(src[i]);
    }
    return Vec::loadu(buffer);
  }
}

// Whether the rows-along-lanes forward reads the last K % W columns of a row
// as one more vector padded with -inf (a masked action: it moves neither the
// max nor the moments). Column by column, each pays a scalar exp. Measured,
// the masked vector was the faster way on AVX-512 but the slower one on AVX2,
// which keeps the column-by-column tail (benchmarks/README.md, "Row kernels").
template <typename scalar_t>
constexpr bool reads_tail_as_masked_vector() {
#if defined(CPU_CAPABILITY_AVX512)
  return std::is_same_v<scalar_t, float>;
#else
  return false;
#endif
}

// As load_acc, but missing lanes are -inf.
template <typename scalar_t>
inline AccVec<scalar_t> load_acc_padded_with_masked(
    const scalar_t* src, int64_t count) {
  using Vec = AccVec<scalar_t>;
  const acc_t<scalar_t> masked =
      -std::numeric_limits<acc_t<scalar_t>>::infinity();
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    return _mm512_mask_loadu_ps(
        _mm512_set1_ps(masked), static_cast<__mmask16>((1u << count) - 1), src);
  }
#endif
  return Vec::set(Vec(masked), load_acc(src, count), count);
}

template <typename scalar_t>
inline void store_from_acc(
    const AccVec<scalar_t>& values, scalar_t* dst, int64_t count) {
  using Vec = AccVec<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, acc_t<scalar_t>>) {
    if (count == Vec::size()) {
      values.store(dst);
    } else {
      values.store(dst, count);
    }
  } else {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    if constexpr (converts_whole_vectors<scalar_t>()) {
      if (count == Vec::size()) {
        store_whole_vector(values, dst);
        return;
      }
    }
#endif
    alignas(64) acc_t<scalar_t> buffer[Vec::size()];
    values.store(buffer);
    for (int64_t i = 0; i < count; ++i) {
      dst[i] = static_cast<scalar_t>(buffer[i]);
    }
  }
}

// values with the lanes whose action the mask rules out set to -inf
// (math::allowed_logit), allowed[i] saying whether lane i's action is
// allowed; lanes past `count` are -inf too.
template <typename acc>
inline Vectorized<acc> rule_out(
    const Vectorized<acc>& values, const bool* allowed, int64_t count) {
  using Vec = Vectorized<acc>;
  const Vec ruled_out(-std::numeric_limits<acc>::infinity());
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<acc, float>) {
    if (count == Vec::size()) {
      // Eight bools (bytes of 0 or 1) widened to lanes, compared with 0.
      const __m256i flags = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(allowed)));
      return _mm256_blendv_ps(
          values, ruled_out,
          _mm256_castsi256_ps(
              _mm256_cmpeq_epi32(flags, _mm256_setzero_si256())));
    }
  }
#endif
  alignas(64) acc keep[Vec::size()];
  for (int64_t i = 0; i < Vec::size(); ++i) {
    keep[i] = i < count && allowed[i] ? acc(1) : acc(0);
  }
  return Vec::blendv(ruled_out, values, Vec::loadu(keep) == Vec(acc(1)));
}

// load_acc of a row's columns [k, k + count), with its action mask's row
// `allowed` applied where kMasked (unread otherwise).
template <bool kMasked, typename scalar_t>
inline AccVec<scalar_t> load_allowed(
    const scalar_t* row, const bool* allowed, int64_t k, int64_t count) {
  if constexpr (kMasked) {
    return rule_out(load_acc(row + k, count), allowed + k, count);
  } else {
    return load_acc(row + k, count);
  }
}

// Calls body(std::bool_constant<masked>) for whether `logits` carries an
// action mask, so that the unmasked kernels compile without its loads.
template <typename scalar_t, typename Body>
inline void with_action_mask(const LogitRows<scalar_t>& logits, const Body& body) {
  if (logits.allowed != nullptr) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// The two lane reductions: a sum, and a max that is not NaN-propagating
// (one instruction per step; used for the row max, which is only a shift,
// see row_moments_along_lanes).
struct AddVectors {
  template <typename V>
  V operator()(const V& a, const V& b) const {
    return a + b;
  }
};
struct MaxOfVectors {
  template <typename V>
  V operator()(const V& a, const V& b) const {
    return math::max_of(a, b);
  }
};

template <typename acc, typename Op>
inline acc reduce_across_lanes(const Vectorized<acc>& v, Op op) {
  return at::vec::vec_reduce_all<acc>(
      [op](Vectorized<acc>& a, Vectorized<acc>& b) { return op(a, b); }, v);
}

// R copies of v, built by copy: Vectorized's default constructor zeroes its
// lanes, and arrays of it built that way compiled to a `rep stos` per array,
// whose start-up cost showed in the rows-along-lanes forward's profile
// (benchmarks/README.md, "Row kernels").
template <typename V, int... I>
inline std::array<V, sizeof...(I)> copies_of(
    const V& v, std::integer_sequence<int, I...>) {
  return {{(static_cast<void>(I), v)...}};
}
template <int R, typename V>
inline std::array<V, R> copies_of(const V& v) {
  return copies_of(v, std::make_integer_sequence<int, R>{});
}

// out[r] = v[r] reduced across its lanes with op, r < R. Four float32 rows
// share one shuffle tree (lane_reduce.h); anything else is reduced row by row.
template <std::size_t R, typename acc, typename Op>
inline void reduce_each_across_lanes(
    const std::array<Vectorized<acc>, R>& v, acc* out, Op op) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (R == 4 && std::is_same_v<acc, float>) {
    lane_reduce::each_of_four(
        v[0], v[1], v[2], v[3], out, [op](auto a, auto b) {
          return decltype(a)(op(Vectorized<float>(a), Vectorized<float>(b)));
        });
    return;
  }
#endif
  for (std::size_t r = 0; r < R; ++r) {
    out[r] = reduce_across_lanes(v[r], op);
  }
}

// Transposes W rows starting at first_row into columns:
// columns[k][r] = z[first_row + r, k]; lanes past num_rows are 0. K is a
// compile-time constant so that full tiles compile to straight-line moves.
template <int64_t K, typename scalar_t>
inline void gather_tile_values(
    LogitRows<scalar_t> logits,
    int64_t first_row,
    int64_t num_rows,
    acc_t<scalar_t> (*columns)[AccVec<scalar_t>::size()]) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t W = AccVec<scalar_t>::size();
  const scalar_t* first = logits.data + first_row * logits.row_stride;
#if defined(CPU_CAPABILITY_AVX512)
  // Lane r: r * row_stride, the offset of row r's first element.
  const auto offsets_of_rows = [](int64_t row_stride) {
    return _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int32_t>(row_stride)));
  };
#endif
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  constexpr bool is_float = std::is_same_v<scalar_t, float>;
  if constexpr (is_float && tile_transpose::has_register_transpose(K)) {
    if (num_rows == W && logits.row_stride == K) {
      tile_transpose::rows_to_columns<K>(first, columns);
      return;
    }
  }
  if constexpr (is_float && tile_transpose::is_power_of_two_up_to_32(K)) {
    // Rows further apart (one sub-head's columns of wider rows, a slice):
    // the same transpose from vectors put together from the rows.
    if (num_rows == W && logits.row_stride >= K) {
      tile_transpose::strided_rows_to_columns<K>(first, logits.row_stride, columns);
      return;
    }
  }
  // Otherwise a full tile of contiguous 16-bit rows is K whole vectors to
  // convert, and on AVX-512 a float32 one is copied with plain loads: either
  // way the tile is then transposed from L1. (Gathers straight from memory
  // defeat the hardware prefetcher, which shows once the logits are out of
  // cache: benchmarks/README.md, "Row kernels".)
#if defined(CPU_CAPABILITY_AVX512)
  constexpr bool copies_tile = converts_whole_vectors<scalar_t>() || is_float;
#else
  constexpr bool copies_tile = converts_whole_vectors<scalar_t>();
#endif
  if constexpr (copies_tile) {
    if (num_rows == W && logits.row_stride == K) {
      alignas(64) float tile[W * K];
      for (int64_t i = 0; i < W * K; i += W) {
        load_whole_vector(first + i).store(tile + i);
      }
      if constexpr (tile_transpose::has_register_transpose(K)) {
        tile_transpose::rows_to_columns<K>(tile, columns);
      } else {
#if defined(CPU_CAPABILITY_AVX512)
        // A hardware gather per column: one instruction instead of W
        // scalar moves.
        const __m512i offsets = offsets_of_rows(K);
        for (int64_t k = 0; k < K; ++k) {
          _mm512_store_ps(columns[k], _mm512_i32gather_ps(offsets, tile + k, 4));
        }
#else
        for (int64_t r = 0; r < W; ++r) {
          for (int64_t k = 0; k < K; ++k) {
            columns[k][r] = tile[r * K + k];
          }
        }
#endif
      }
      return;
    }
  }
#endif
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (num_rows == W && logits.row_stride <= INT32_MAX / W) {
      const __m512i row_offsets = offsets_of_rows(logits.row_stride);
      for (int64_t k = 0; k < K; ++k) {
        _mm512_store_ps(columns[k], _mm512_i32gather_ps(row_offsets, first + k, 4));
      }
      return;
    }
  }
#endif
  if (num_rows == W) {
    for (int64_t r = 0; r < W; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        columns[k][r] = static_cast<acc>(first[r * logits.row_stride + k]);
      }
    }
    return;
  }
  for (int64_t r = 0; r < W; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      columns[k][r] =
          r < num_rows ? static_cast<acc>(first[r * logits.row_stride + k]) : acc(0);
    }
  }
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// flags[i] = all-ones bits where allowed[i] is false (a ruled-out action),
// 0 where it is true, i < N: a blend mask, as a float's bits.
template <int64_t N>
inline void write_ruled_out_flags(const bool* allowed, float* flags) {
  constexpr int64_t kWhole = N - N % 8;
  // Eight bools (bytes of 0 or 1) at a time, widened and compared with 0.
  for (int64_t i = 0; i < kWhole; i += 8) {
    const __m256i bytes = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(allowed + i)));
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(flags + i),
        _mm256_cmpeq_epi32(bytes, _mm256_setzero_si256()));
  }
  if constexpr (kWhole < N) {
    for (int64_t i = kWhole; i < N; ++i) {
      const uint32_t bits = allowed[i] ? 0u : ~0u;
      std::memcpy(flags + i, &bits, sizeof(bits));
    }
  }
}
#endif

// gather_tile_values, then the action mask's rows applied: a ruled-out
// action's column in its row's lane is -inf (math::allowed_logit).
// Always inlined: each rows-in-lanes kernel, kept out of line (below), gets
// its own copy for its K.
template <int64_t K, typename scalar_t>
C10_ALWAYS_INLINE void gather_tile(
    LogitRows<scalar_t> logits,
    int64_t first_row,
    int64_t num_rows,
    acc_t<scalar_t> (*columns)[AccVec<scalar_t>::size()]) {
  gather_tile_values<K>(logits, first_row, num_rows, columns);
  if (logits.allowed == nullptr) {
    return;
  }
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  if constexpr (
      std::is_same_v<acc_t<scalar_t>, float> &&
      tile_transpose::has_register_transpose(K)) {
    if (num_rows == W) {
      // The mask's tile, as all-ones bits where ruled out, goes through the
      // logits' register transpose: a column of flags per column of logits,
      // instead of W * K scalar selects.
      alignas(64) float ruled_out_rows[W * K];
      if (logits.allowed_row_stride == K) {
        write_ruled_out_flags<W * K>(logits.allowed_row(first_row), ruled_out_rows);
      } else {
        for (int64_t r = 0; r < W; ++r) {
          write_ruled_out_flags<K>(logits.allowed_row(first_row + r), ruled_out_rows + r * K);
        }
      }
      alignas(64) float ruled_out[K][W];
      tile_transpose::rows_to_columns<K>(ruled_out_rows, ruled_out);
      const Vec neg_inf(-std::numeric_limits<float>::infinity());
      for (int64_t k = 0; k < K; ++k) {
        Vec::blendv(Vec::loadu(columns[k]), neg_inf, Vec::loadu(ruled_out[k]))
            .store(columns[k]);
      }
      return;
    }
  }
#endif
  for (int64_t r = 0; r < num_rows; ++r) {
    const bool* allowed = logits.allowed_row(first_row + r);
    for (int64_t k = 0; k < K; ++k) {
      columns[k][r] = math::allowed_logit(columns[k][r], allowed[k]);
    }
  }
}

// Writes the first n rows of a tile of gradients held as columns
// (columns[k][r] for row r) to the rows at out, row r at r * out_row_stride
// (>= K; contiguous rows, K, take the register transpose).
template <int64_t K, typename scalar_t>
inline void store_tile_rows(
    acc_t<scalar_t> (*columns)[AccVec<scalar_t>::size()],
    int64_t n,
    scalar_t* out,
    int64_t out_row_stride) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  if constexpr (
      std::is_same_v<scalar_t, float> &&
      tile_transpose::is_power_of_two_up_to_32(K)) {
    if (n == W && out_row_stride > K) {
      tile_transpose::columns_to_strided_rows<K>(columns, out, out_row_stride);
      return;
    }
  }
  if constexpr (tile_transpose::has_register_transpose(K)) {
    if (n == W && out_row_stride == K) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        tile_transpose::columns_to_rows<K>(columns, out);
        return;
      } else if constexpr (converts_whole_vectors<scalar_t>()) {
        alignas(64) float tile[W * K];
        tile_transpose::columns_to_rows<K>(columns, tile);
        for (int64_t i = 0; i < W * K; i += W) {
          store_whole_vector(Vec::loadu(tile + i), out + i);
        }
        return;
      }
    }
  }
#endif
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      out[r * out_row_stride + k] = static_cast<scalar_t>(columns[k][r]);
    }
  }
}

// The forward passes leave each row's moments s (in stats.log_sum_exp) and t
// (in stats.entropy); this turns them into log s and h = log s - t / s. Kept
// apart from the passes because log and divide are long dependency chains:
// here the iterations are independent and pipeline, at the end of each tile
// they stalled it (benchmarks/README.md, "Row kernels").
// Where the passes left each taken action's tempered shifted logit in
// taken.log_prob, this subtracts log s: math::tempered_log_prob in two steps.
template <typename scalar_t>
void finish_row_stats(
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TakenLogProbs<acc_t<scalar_t>> taken) {
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  for (int64_t first = row_begin; first < row_end; first += W) {
    const int64_t n = std::min<int64_t>(W, row_end - first);
    // Lanes past n are not stored.
    const Vec sum_exp = row_sum_exp(Vec::loadu(stats.log_sum_exp + first, n));
    const Vec sum_exp_times_shift = Vec::loadu(stats.entropy + first, n);
    const Vec log_sum_exp = math::log_of(sum_exp);
    log_sum_exp.store(stats.log_sum_exp + first, n);
    row_entropy_from_moments(log_sum_exp, sum_exp, sum_exp_times_shift)
        .store(stats.entropy + first, n);
    if (taken.log_prob != nullptr) {
      (Vec::loadu(taken.log_prob + first, n) - log_sum_exp)
          .store(taken.log_prob + first, n);
    }
  }
}

// Out of line, as backward_rows_in_lanes: inlined, every K's loop lands in
// forward_rows' one dispatching function, whose register allocation then
// spills the exp's constants in the short rows' loops (benchmarks/README.md,
// "Rows-in-lanes kernels out of line").
template <int64_t K, typename scalar_t>
C10_NOINLINE void forward_rows_in_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TakenLogProbs<acc_t<scalar_t>> taken) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const acc lowest = lowest_finite<acc>();
  alignas(64) acc columns[K][W];
  for (int64_t first = row_begin; first < row_end; first += W) {
    const int64_t n = std::min<int64_t>(W, row_end - first);
    gather_tile<K>(logits, first, n, columns);
    // The max pass need not propagate NaN: a NaN logit makes its own shifted
    // value NaN in the moments below, and so the row's results.
    Vec row_max = Vec::loadu(columns[0]);
    for (int64_t k = 1; k < K; ++k) {
      row_max = math::max_of(Vec::loadu(columns[k]), row_max);
    }
    const Vec shift = row_shift(row_max, lowest);
    Vec sum_exp(acc(0));
    Vec sum_exp_times_shift(acc(0));
    if (logits.scale == acc(1)) {
      for (int64_t k = 0; k < K; ++k) {
        accumulate_softmax_moments(
            Vec::loadu(columns[k]) - shift, lowest, sum_exp,
            sum_exp_times_shift);
      }
    } else {
      // Tempered: the shifted logits (x - m) * c (math::tempered_log_prob).
      const Vec scale(logits.scale);
      for (int64_t k = 0; k < K; ++k) {
        accumulate_softmax_moments(
            (Vec::loadu(columns[k]) - shift) * scale, lowest, sum_exp,
            sum_exp_times_shift);
      }
    }
    shift.store(stats.shift + first, n);
    sum_exp.store(stats.log_sum_exp + first, n);
    sum_exp_times_shift.store(stats.entropy + first, n);
    if (taken.actions != nullptr) {
      // Scalar: a vector load of values just stored one by one would wait
      // on store forwarding.
      for (int64_t r = 0; r < n; ++r) {
        taken.log_prob[first + r] = math::tempered_shifted_logit(
            columns[taken.actions[(first + r) * taken.action_stride]][r],
            stats.shift[first + r],
            logits.scale);
      }
    }
  }
  finish_row_stats<scalar_t>(row_begin, row_end, stats, taken);
}

// The forward of parameterized rows in lanes (ParameterizedForwardRowsFn):
// forward_rows_in_lanes' statistics, bit for bit, and each row's h_c from a
// third moment, the actions' entropies gathered as a tile beside the logits
// (or, shared by the rows, one value per column).
template <int64_t K, typename scalar_t>
void parameterized_forward_rows_in_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    acc_t<scalar_t>* expected) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const acc lowest = lowest_finite<acc>();
  const bool shares_entropies = action_entropies.row_stride == 0;
  const LogitRows<acc> entropy_rows{action_entropies.values, action_entropies.row_stride, K};
  alignas(64) acc columns[K][W];
  alignas(64) acc entropies[K][W];
  for (int64_t first = row_begin; first < row_end; first += W) {
    const int64_t n = std::min<int64_t>(W, row_end - first);
    gather_tile<K>(logits, first, n, columns);
    if (!shares_entropies) {
      gather_tile<K>(entropy_rows, first, n, entropies);
    }
    Vec row_max = Vec::loadu(columns[0]);
    for (int64_t k = 1; k < K; ++k) {
      row_max = math::max_of(Vec::loadu(columns[k]), row_max);
    }
    const Vec shift = row_shift(row_max, lowest);
    Vec sum_exp(acc(0));
    Vec sum_exp_times_shift(acc(0));
    Vec sum_exp_times_entropy(acc(0));
    for (int64_t k = 0; k < K; ++k) {
      math::accumulate_softmax_moments_with_value(
          Vec::loadu(columns[k]) - shift, lowest,
          shares_entropies ? Vec(action_entropies.values[k])
                           : Vec::loadu(entropies[k]),
          sum_exp, sum_exp_times_shift, sum_exp_times_entropy);
    }
    shift.store(stats.shift + first, n);
    sum_exp.store(stats.log_sum_exp + first, n);
    sum_exp_times_shift.store(stats.entropy + first, n);
    (sum_exp_times_entropy / row_sum_exp(sum_exp)).store(expected + first, n);
  }
  finish_row_stats<scalar_t>(row_begin, row_end, stats, {});
}

template <int64_t K, typename scalar_t>
C10_NOINLINE void backward_rows_in_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    acc_t<scalar_t> grad_scale,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    const acc_t<scalar_t>* row_scales) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const acc log_p_floor = log_probability_floor<acc>();
  const Vec uniform_scale(grad_scale);
  alignas(64) acc columns[K][W];
  for (int64_t first = row_begin; first < row_end; first += W) {
    const int64_t n = std::min<int64_t>(W, row_end - first);
    gather_tile<K>(logits, first, n, columns);
    const Vec scale = row_scales == nullptr
        ? uniform_scale
        : Vec::loadu(row_scales + first, n);
    const Vec shift = Vec::loadu(stats.shift + first, n);
    const Vec log_sum_exp = Vec::loadu(stats.log_sum_exp + first, n);
    const Vec entropy = Vec::loadu(stats.entropy + first, n);
    for (int64_t k = 0; k < K; ++k) {
      entropy_grad_element(
          Vec::loadu(columns[k]), shift, log_sum_exp, entropy, scale,
          log_p_floor)
          .store(columns[k]);
    }
    store_tile_rows<K, scalar_t>(
        columns, n, grad_logits + first * grad_row_stride, grad_row_stride);
  }
}

// Whether the taken action's element gets g_a (token_terms_grad_element):
// unless z[a] is -inf, stored or ruled out by the action mask's row
// `allowed` (null for none): a constant, whose element is 0.
template <typename scalar_t>
inline bool action_gets_its_term(
    const scalar_t* row, const bool* allowed, int64_t action) {
  return (allowed == nullptr || allowed[action]) &&
      !(static_cast<acc_t<scalar_t>>(row[action]) ==
        -std::numeric_limits<acc_t<scalar_t>>::infinity());
}


// The taken actions of rows [first, first + n) in lanes, as acc values (exact:
// rows in lanes have at most 32 columns), -1 in the lanes past n. Built from
// scalars in registers, not through a buffer whose vector reload would wait
// on store forwarding.
template <typename Vec, typename acc, std::size_t... Lane>
Vec taken_action_lanes(
    const TokenGrads<acc>& grads,
    int64_t first,
    int64_t n,
    std::index_sequence<Lane...>) {
  const auto lane = [&](int64_t r) {
    return r < n
        ? static_cast<acc>(grads.actions[(first + r) * grads.action_stride])
        : acc(-1);
  };
  return Vec(lane(static_cast<int64_t>(Lane))...);
}
template <typename Vec, typename acc>
Vec taken_action_lanes(const TokenGrads<acc>& grads, int64_t first, int64_t n) {
  return taken_action_lanes<Vec>(
      grads, first, n, std::make_index_sequence<Vec::size()>{});
}

template <int64_t K, typename scalar_t>
void token_backward_rows_in_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TokenGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const acc log_p_floor = log_probability_floor<acc>();
  const Vec scale(logits.scale);
  alignas(64) acc columns[K][W];
  for (int64_t first = row_begin; first < row_end; first += W) {
    const int64_t n = std::min<int64_t>(W, row_end - first);
    gather_tile<K>(logits, first, n, columns);
    const Vec shift = Vec::loadu(stats.shift + first, n);
    const Vec log_sum_exp = Vec::loadu(stats.log_sum_exp + first, n);
    const Vec grad_entropy = Vec::loadu(grads.grad_entropy + first, n);
    const Vec grad_log_prob = grads.grad_log_prob == nullptr
        ? Vec(acc(0))
        : Vec::loadu(grads.grad_log_prob + first, n);
    const Vec negative_grad_entropy = Vec(acc(0)) - grad_entropy;
    const Vec negative_row_offset = token_terms_row_offset(
        grad_log_prob, grad_entropy, Vec::loadu(stats.entropy + first, n));
    if (grads.actions == nullptr) {
      for (int64_t k = 0; k < K; ++k) {
        token_terms_grad_element(
            Vec::loadu(columns[k]), shift, scale, log_sum_exp,
            negative_grad_entropy, negative_row_offset, log_p_floor)
            .store(columns[k]);
      }
    } else {
      // g_a added in the lanes whose taken action is column k, by a compare
      // and a blend (action_gets_its_term in lanes: the tile holds -inf for
      // a ruled-out action). Added row by row into the stored tile instead,
      // each scalar store stalls the tile's vector reload on store
      // forwarding, once per row: at small K, per few logits.
      const Vec action_lanes = taken_action_lanes<Vec>(grads, first, n);
      const Vec neg_inf(-std::numeric_limits<acc>::infinity());
      for (int64_t k = 0; k < K; ++k) {
        const Vec logit = Vec::loadu(columns[k]);
        const Vec grad = token_terms_grad_element(
            logit, shift, scale, log_sum_exp, negative_grad_entropy,
            negative_row_offset, log_p_floor);
        const Vec takes_g_a =
            (action_lanes == Vec(static_cast<acc>(k))) & (logit != neg_inf);
        Vec::blendv(grad, grad + grad_log_prob, takes_g_a).store(columns[k]);
      }
    }
    store_tile_rows<K, scalar_t>(
        columns, n, grad_logits + first * grad_row_stride, grad_row_stride);
  }
}

// The shift and the two moments of R rows (rows[r] at first[r]), reduced
// across lanes. One row's chain (max, its lane reduction, exp, the sums and
// their lane reductions) is latency-bound; R independent rows interleaved
// keep the vector units busy.
// With kWithValue, also sum_exp_times_value[r] = sum_k exp(z - m) v[k] of
// row r's values v = value_rows[r] (K finite values beside the logits: a
// parameterized row's action entropies), in the same sweep as the others.
template <int R, bool kScaled, bool kMasked, bool kWithValue = false, typename scalar_t>
inline void row_moments_along_lanes(
    const scalar_t* const* rows,
    const bool* const* allowed_rows,
    int64_t K,
    acc_t<scalar_t> scale,
    int64_t prefetch_bytes,
    acc_t<scalar_t>* row_max,
    acc_t<scalar_t>* sum_exp,
    acc_t<scalar_t>* sum_exp_times_shift,
    const acc_t<scalar_t>* const* value_rows = nullptr,
    acc_t<scalar_t>* sum_exp_times_value = nullptr) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const int64_t full = K - K % W;
  const acc lowest = lowest_finite<acc>();
  // Tempered logits: the moments are of the shifted logits (x - m) * scale,
  // m the max of x (math::tempered_log_prob).
  const Vec scale_vec(scale);
  const auto tempered = [&](const Vec& x) {
    if constexpr (kScaled) {
      return x * scale_vec;
    } else {
      return x;
    }
  };
  const auto tempered_scalar = [&](acc x) {
    if constexpr (kScaled) {
      return x * scale;
    } else {
      return x;
    }
  };
  // Row r's columns [k, k + count), count <= W; with an action mask
  // (allowed_rows[r], unread without one) ruled-out actions are -inf.
  const auto load = [&](int r, int64_t k, int64_t count) {
    if constexpr (kMasked) {
      return rule_out(load_acc(rows[r] + k, count), allowed_rows[r] + k, count);
    } else {
      return load_acc(rows[r] + k, count);
    }
  };
  const auto load_scalar = [&](int r, int64_t k) {
    const acc x = static_cast<acc>(rows[r][k]);
    if constexpr (kMasked) {
      return math::allowed_logit(x, allowed_rows[r][k]);
    } else {
      return x;
    }
  };
  // As in the tiles above, NaN need not survive the max pass.
  std::array<Vec, R> lane_max =
      copies_of<R>(Vec(-std::numeric_limits<acc>::infinity()));
  for (int64_t k = 0; k < full; k += W) {
    for (int r = 0; r < R; ++r) {
      // Integer arithmetic: the address may lie past the tensor (a prefetch
      // never faults), a pointer may not.
      __builtin_prefetch(reinterpret_cast<const void*>(
          reinterpret_cast<uintptr_t>(rows[r] + k) + prefetch_bytes));
      lane_max[r] = math::max_of(load(r, k, W), lane_max[r]);
    }
  }
  constexpr bool kMaskedTail = reads_tail_as_masked_vector<scalar_t>();
  const auto masked_tail = [&](int r) {
    const auto tail = load_acc_padded_with_masked(rows[r] + full, K - full);
    if constexpr (kMasked) {
      return rule_out(tail, allowed_rows[r] + full, K - full);
    } else {
      return tail;
    }
  };
  if (kMaskedTail && full < K) {
    for (int r = 0; r < R; ++r) {
      lane_max[r] = math::max_of(masked_tail(r), lane_max[r]);
    }
  }
  std::array<Vec, R> shift = lane_max;
  std::array<Vec, R> lane_sum_exp = copies_of<R>(Vec(acc(0)));
  std::array<Vec, R> lane_sum_exp_times_shift = lane_sum_exp;
  std::array<Vec, R> lane_sum_exp_times_value = lane_sum_exp;
  reduce_each_across_lanes(lane_max, row_max, MaxOfVectors{});
  for (int r = 0; r < R; ++r) {
    if (!kMaskedTail) {
      for (int64_t k = full; k < K; ++k) {
        row_max[r] = math::max_of(load_scalar(r, k), row_max[r]);
      }
    }
    // From here on row_max[r] is the row's shift (what the backward reads).
    row_max[r] = row_shift(row_max[r], lowest);
    shift[r] = Vec(row_max[r]);
  }
  // Columns [k, k + count) of row r; the values past count are 0 (those
  // columns' exp is 0 too), never an unread NaN.
  const auto accumulate = [&](int r, const Vec& shifted_logit, int64_t k, int64_t count) {
    if constexpr (kWithValue) {
      math::accumulate_softmax_moments_with_value(
          shifted_logit, lowest, Vec::loadu(value_rows[r] + k, count),
          lane_sum_exp[r], lane_sum_exp_times_shift[r],
          lane_sum_exp_times_value[r]);
    } else {
      accumulate_softmax_moments(
          shifted_logit, lowest, lane_sum_exp[r], lane_sum_exp_times_shift[r]);
    }
  };
  for (int64_t k = 0; k < full; k += W) {
    for (int r = 0; r < R; ++r) {
      accumulate(r, tempered(load(r, k, W) - shift[r]), k, W);
    }
  }
  if (kMaskedTail && full < K) {
    for (int r = 0; r < R; ++r) {
      accumulate(r, tempered(masked_tail(r) - shift[r]), full, K - full);
    }
  }
  reduce_each_across_lanes(lane_sum_exp, sum_exp, AddVectors{});
  reduce_each_across_lanes(
      lane_sum_exp_times_shift, sum_exp_times_shift, AddVectors{});
  if constexpr (kWithValue) {
    reduce_each_across_lanes(
        lane_sum_exp_times_value, sum_exp_times_value, AddVectors{});
  }
  if (!kMaskedTail) {
    for (int r = 0; r < R; ++r) {
      for (int64_t k = full; k < K; ++k) {
        const acc shifted_logit = tempered_scalar(load_scalar(r, k) - row_max[r]);
        if constexpr (kWithValue) {
          math::accumulate_softmax_moments_with_value(
              shifted_logit, lowest, value_rows[r][k], sum_exp[r],
              sum_exp_times_shift[r], sum_exp_times_value[r]);
        } else {
          accumulate_softmax_moments(
              shifted_logit, lowest, sum_exp[r], sum_exp_times_shift[r]);
        }
      }
    }
  }
}

// With kWithValue, also a parameterized row's expected action entropy
// expected[i] = sum_k p[k] c[i, k] (ParameterizedForwardRowsFn), as a third
// moment of the same sweep.
template <bool kScaled, bool kMasked, bool kWithValue = false, typename scalar_t>
void forward_rows_along_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TakenLogProbs<acc_t<scalar_t>> taken,
    ActionEntropies<acc_t<scalar_t>> action_entropies = {},
    acc_t<scalar_t>* expected = nullptr) {
  using acc = acc_t<scalar_t>;
  const int64_t K = logits.num_cols;
  const int64_t prefetch_bytes =
      kPrefetchRowsAhead * logits.row_stride * int64_t{sizeof(scalar_t)};
  const scalar_t* rows[kInterleavedRows];
  const bool* allowed_rows[kInterleavedRows] = {};
  const acc* value_rows[kInterleavedRows] = {};
  acc sum_exp_times_value[kInterleavedRows] = {};
  // Points rows (and allowed_rows, value_rows) at rows [i, i + count).
  const auto point_at = [&](int64_t i, int count) {
    for (int r = 0; r < count; ++r) {
      rows[r] = logits.data + (i + r) * logits.row_stride;
      if constexpr (kMasked) {
        allowed_rows[r] = logits.allowed_row(i + r);
      }
      if constexpr (kWithValue) {
        value_rows[r] =
            action_entropies.values + (i + r) * action_entropies.row_stride;
      }
    }
  };
  // h_c of rows [i, i + count), whose log_sum_exp still holds s
  // (finish_row_stats takes its log).
  const auto store_expected = [&](int64_t i, int count) {
    if constexpr (kWithValue) {
      for (int r = 0; r < count; ++r) {
        expected[i + r] = sum_exp_times_value[r] /
            math::row_sum_exp(stats.log_sum_exp[i + r]);
      }
    }
  };
  // The taken logits of rows [i, i + count), just read by the passes.
  const auto take_logits = [&](int64_t i, int count) {
    if (taken.actions == nullptr) {
      return;
    }
    for (int r = 0; r < count; ++r) {
      const int64_t action = taken.actions[(i + r) * taken.action_stride];
      acc logit = static_cast<acc>(rows[r][action]);
      if constexpr (kMasked) {
        logit = math::allowed_logit(logit, allowed_rows[r][action]);
      }
      taken.log_prob[i + r] =
          math::tempered_shifted_logit(logit, stats.shift[i + r], logits.scale);
    }
  };
  int64_t i = row_begin;
  for (; i + kInterleavedRows <= row_end; i += kInterleavedRows) {
    point_at(i, kInterleavedRows);
    row_moments_along_lanes<kInterleavedRows, kScaled, kMasked, kWithValue>(
        rows, allowed_rows, K, logits.scale, prefetch_bytes, stats.shift + i,
        stats.log_sum_exp + i, stats.entropy + i, value_rows,
        sum_exp_times_value);
    store_expected(i, kInterleavedRows);
    take_logits(i, kInterleavedRows);
  }
  for (; i < row_end; ++i) {
    point_at(i, 1);
    row_moments_along_lanes<1, kScaled, kMasked, kWithValue>(
        rows, allowed_rows, K, logits.scale, prefetch_bytes, stats.shift + i,
        stats.log_sum_exp + i, stats.entropy + i, value_rows,
        sum_exp_times_value);
    store_expected(i, 1);
    take_logits(i, 1);
  }
  finish_row_stats<scalar_t>(row_begin, row_end, stats, taken);
}

template <bool kMasked, typename scalar_t>
void backward_rows_along_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    acc_t<scalar_t> grad_scale,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    const acc_t<scalar_t>* row_scales) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const int64_t K = logits.num_cols;
  const acc log_p_floor = log_probability_floor<acc>();
  for (int64_t i = row_begin; i < row_end; ++i) {
    const scalar_t* row = logits.data + i * logits.row_stride;
    const bool* allowed = kMasked ? logits.allowed_row(i) : nullptr;
    scalar_t* out = grad_logits + i * grad_row_stride;
    const Vec scale(row_scales == nullptr ? grad_scale : row_scales[i]);
    const Vec shift(stats.shift[i]);
    const Vec log_sum_exp(stats.log_sum_exp[i]);
    const Vec entropy(stats.entropy[i]);
    for (int64_t k = 0; k < K; k += W) {
      const int64_t n = std::min<int64_t>(W, K - k);
      store_from_acc<scalar_t>(
          entropy_grad_element(
              load_allowed<kMasked>(row, allowed, k, n), shift,
              log_sum_exp, entropy, scale, log_p_floor),
          out + k, n);
    }
  }
}

template <bool kMasked, typename scalar_t>
void token_backward_rows_along_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TokenGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const int64_t K = logits.num_cols;
  const acc log_p_floor = log_probability_floor<acc>();
  const Vec scale(logits.scale);
  // The column indices of a short row's vectors, built once: Vec::arange
  // assembles its vector lane by lane. Exact in acc: K <= kShortRowVectors * W.
  std::array<Vec, kShortRowVectors> short_row_columns;
  for (int64_t j = 0; j < kShortRowVectors; ++j) {
    short_row_columns[j] = Vec::arange(static_cast<acc>(j * W), acc(1));
  }
  for (int64_t i = row_begin; i < row_end; ++i) {
    const scalar_t* row = logits.data + i * logits.row_stride;
    const bool* allowed = kMasked ? logits.allowed_row(i) : nullptr;
    scalar_t* out = grad_logits + i * grad_row_stride;
    const Vec shift(stats.shift[i]);
    const Vec log_sum_exp(stats.log_sum_exp[i]);
    const acc grad_entropy = grads.grad_entropy[i];
    const acc grad_log_prob =
        grads.grad_log_prob == nullptr ? acc(0) : grads.grad_log_prob[i];
    const Vec negative_grad_entropy(acc(0) - grad_entropy);
    const Vec negative_row_offset(
        token_terms_row_offset(grad_log_prob, grad_entropy, stats.entropy[i]));
    // The taken action's column, or -1 where it gets no term of its own.
    const int64_t action = grads.actions != nullptr &&
            action_gets_its_term(
                row, allowed, grads.actions[i * grads.action_stride])
        ? grads.actions[i * grads.action_stride]
        : -1;
    const auto grad_vector = [&](int64_t k, int64_t n) {
      return token_terms_grad_element(
          load_allowed<kMasked>(row, allowed, k, n), shift, scale,
          log_sum_exp, negative_grad_entropy, negative_row_offset, log_p_floor);
    };
    if (action >= 0 && K <= kShortRowVectors * W) {
      // In registers: g_a added in the action's lane by a compare with the
      // columns' indices and a blend. A branch on which vector holds the
      // action would mispredict about once a row, as often as a short row
      // ends.
      const Vec action_column(static_cast<acc>(action));
      const Vec grad_log_prob_vec(grad_log_prob);
      for (int64_t j = 0; j * W < K; ++j) {
        const int64_t k = j * W;
        const int64_t n = std::min<int64_t>(W, K - k);
        const Vec grad = grad_vector(k, n);
        store_from_acc<scalar_t>(
            Vec::blendv(
                grad, grad + grad_log_prob_vec,
                short_row_columns[j] == action_column),
            out + k, n);
      }
      continue;
    }
    for (int64_t k = 0; k < K; k += W) {
      const int64_t n = std::min<int64_t>(W, K - k);
      Vec grad = grad_vector(k, n);
      if (action >= k && action < k + n) {
        grad = Vec::blendv(
            grad, grad + Vec(grad_log_prob),
            Vec::arange(acc(0), acc(1)) == Vec(static_cast<acc>(action - k)));
      }
      store_from_acc<scalar_t>(grad, out + k, n);
    }
  }
}

// Parameterized actions (row_kernels.h), rows along the lanes: the forward's
// h_c is a third moment of forward_rows_along_lanes' sweep; the backward
// sweeps each row once, from the statistics the forward kept.

// A parameterized row's constants in the backward, as vectors: its shift and
// log s, -g, a and the row offset -(g h + a h_c) of
// math::parameterized_grad_element.
template <typename scalar_t>
struct ParameterizedRow {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  Vec shift;
  Vec log_sum_exp;
  Vec negative_grad_entropy;
  Vec grad_expected;
  Vec row_offset;

  ParameterizedRow(
      const RowStats<acc>& stats, const ParameterizedGrads<acc>& grads, int64_t i)
      : shift(stats.shift[i]),
        log_sum_exp(stats.log_sum_exp[i]),
        negative_grad_entropy(acc(0) - grads.grad_entropy[i]),
        grad_expected(grads.grad_expected[i]),
        row_offset(parameterized_row_offset(
            grads.grad_entropy[i], stats.entropy[i], grads.grad_expected[i],
            grads.expected_action_entropy[i])) {}
};

// Columns [k, k + n) of a parameterized row in the backward: writes their
// logits' gradient to grad_row (skipped where null) and returns each column's
// a p[k], d (a h_c) / d c[k]; lanes past n return 0 (whatever load_allowed
// left there, whose exp could overflow against a very negative shift).
template <bool kMasked, typename scalar_t>
inline AccVec<scalar_t> parameterized_columns_backward(
    const scalar_t* row,
    const bool* allowed,
    int64_t k,
    int64_t n,
    const ParameterizedRow<scalar_t>& r,
    const AccVec<scalar_t>& action_entropies,
    scalar_t* grad_row) {
  using Vec = AccVec<scalar_t>;
  const Vec log_p = clamped_log_prob(
      load_allowed<kMasked>(row, allowed, k, n), r.shift, r.log_sum_exp,
      log_probability_floor<acc_t<scalar_t>>());
  const Vec exp_log_p = math::exp_of(log_p);
  const Vec p = n == Vec::size()
      ? exp_log_p
      : Vec::set(Vec(acc_t<scalar_t>(0)), exp_log_p, n);
  if (grad_row != nullptr) {
    store_from_acc<scalar_t>(
        parameterized_grad_element(
            p, log_p, r.negative_grad_entropy, r.grad_expected,
            action_entropies, r.row_offset),
        grad_row + k, n);
  }
  return r.grad_expected * p;
}

template <bool kMasked, typename scalar_t>
void parameterized_backward_rows_along_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    ParameterizedGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    ActionEntropyGrads<acc_t<scalar_t>> grad_action_entropies) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const int64_t K = logits.num_cols;
  const bool shares_log_std = grad_action_entropies.row_stride == 0;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const acc* entropies =
        action_entropies.values + i * action_entropies.row_stride;
    acc* grad_entropies = grad_action_entropies.values == nullptr
        ? nullptr
        : grad_action_entropies.values + i * grad_action_entropies.row_stride;
    const ParameterizedRow<scalar_t> r(stats, grads, i);
    for (int64_t k = 0; k < K; k += W) {
      const int64_t n = std::min<int64_t>(W, K - k);
      const Vec grad_entropy_of_actions =
          parameterized_columns_backward<kMasked>(
              logits.data + i * logits.row_stride,
              kMasked ? logits.allowed_row(i) : nullptr, k, n, r,
              Vec::loadu(entropies + k, n),
              grad_logits == nullptr ? nullptr
                                     : grad_logits + i * grad_row_stride);
      if (grad_entropies == nullptr) {
        // log_std's gradient is not wanted.
      } else if (shares_log_std) {
        (Vec::loadu(grad_entropies + k, n) + grad_entropy_of_actions)
            .store(grad_entropies + k, n);
      } else {
        grad_entropy_of_actions.store(grad_entropies + k, n);
      }
    }
  }
}

// parameterized_backward_rows_along_lanes for a log_std the rows share and
// rows of C whole vectors (C <= 4): the K action entropies and the K running
// sums of a p[k] stay in registers across the rows, where the general loop
// adds each row's into memory and reads it back for the next (the same
// additions in the same order, so the same bits).
template <int C, bool kMasked, typename scalar_t>
void parameterized_backward_rows_shared_along_lanes(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    ParameterizedGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    ActionEntropyGrads<acc_t<scalar_t>> grad_action_entropies) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  acc* sums_out = grad_action_entropies.values;
  Vec entropies[C];
  Vec sums[C];
  for (int c = 0; c < C; ++c) {
    entropies[c] = Vec::loadu(action_entropies.values + c * W);
    sums[c] = sums_out == nullptr ? Vec(acc(0)) : Vec::loadu(sums_out + c * W);
  }
  for (int64_t i = row_begin; i < row_end; ++i) {
    const ParameterizedRow<scalar_t> r(stats, grads, i);
    for (int c = 0; c < C; ++c) {
      const Vec grad_entropy_of_actions =
          parameterized_columns_backward<kMasked>(
              logits.data + i * logits.row_stride,
              kMasked ? logits.allowed_row(i) : nullptr, c * W, W, r,
              entropies[c],
              grad_logits == nullptr ? nullptr
                                     : grad_logits + i * grad_row_stride);
      if (sums_out != nullptr) {
        sums[c] = sums[c] + grad_entropy_of_actions;
      }
    }
  }
  if (sums_out != nullptr) {
    for (int c = 0; c < C; ++c) {
      sums[c].store(sums_out + c * W);
    }
  }
}

// Calls body(std::integral_constant<int64_t, K>) for the runtime K in
// [1, MaxK]; only those K are instantiated.
template <int64_t MaxK, typename Body, int64_t K = 1>
inline void with_static_cols(int64_t num_cols, const Body& body) {
  if constexpr (K <= MaxK) {
    if (num_cols == K) {
      body(std::integral_constant<int64_t, K>{});
    } else {
      with_static_cols<MaxK, Body, K + 1>(num_cols, body);
    }
  }
}

} // namespace

template <typename scalar_t>
acc_t<scalar_t> sum_values(const scalar_t* values, int64_t n) {
  using acc = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t W = Vec::size();
  // Two accumulators hide the add latency; the order is fixed by n alone.
  Vec sum0(acc(0));
  Vec sum1(acc(0));
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    sum0 = sum0 + load_acc(values + i, W);
    sum1 = sum1 + load_acc(values + i + W, W);
  }
  for (; i < n; i += W) {
    sum0 = sum0 + load_acc(values + i, std::min<int64_t>(W, n - i));
  }
  return reduce_across_lanes(sum0 + sum1, AddVectors{});
}

template <typename scalar_t>
void forward_rows(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TakenLogProbs<acc_t<scalar_t>> taken) {
  if (logits.num_cols > kMaxRowsInLanesCols) {
    with_action_mask(logits, [&](auto masked) {
      constexpr bool kMasked = decltype(masked)::value;
      if (logits.scale == acc_t<scalar_t>(1)) {
        forward_rows_along_lanes<false, kMasked>(
            logits, row_begin, row_end, stats, taken);
      } else {
        forward_rows_along_lanes<true, kMasked>(
            logits, row_begin, row_end, stats, taken);
      }
    });
    return;
  }
  with_static_cols<kMaxRowsInLanesCols>(logits.num_cols, [&](auto cols) {
    forward_rows_in_lanes<decltype(cols)::value>(
        logits, row_begin, row_end, stats, taken);
  });
}

// The longest rows the backwards lay in lanes. A backward has no per-row
// reduction, so rows along lanes only waste the lanes past a short row;
// measured, with AVX-512's masked loads and stores that beats transposing
// tiles once a row fills more than half a vector.
template <typename scalar_t>
constexpr int64_t max_backward_rows_in_lanes_cols() {
#if defined(CPU_CAPABILITY_AVX2)
  // Rows shorter than a vector would need partial loads and stores, which
  // AVX2 has no cheap form of: K = 5..7 were slower along the lanes than in
  // them (benchmarks/README.md, "Row kernels").
  return AccVec<scalar_t>::size() - 1;
#else
  return AccVec<scalar_t>::size() / 2;
#endif
}

template <typename scalar_t>
void backward_rows(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    acc_t<scalar_t> grad_scale,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    const acc_t<scalar_t>* row_scales) {
  constexpr int64_t kMaxBackwardRowsInLanesCols =
      max_backward_rows_in_lanes_cols<scalar_t>();
  if (logits.num_cols > kMaxBackwardRowsInLanesCols) {
    with_action_mask(logits, [&](auto masked) {
      backward_rows_along_lanes<decltype(masked)::value>(
          logits, row_begin, row_end, stats, grad_scale, grad_logits,
          grad_row_stride, row_scales);
    });
    return;
  }
  with_static_cols<kMaxBackwardRowsInLanesCols>(logits.num_cols, [&](auto cols) {
    backward_rows_in_lanes<decltype(cols)::value>(
        logits, row_begin, row_end, stats, grad_scale, grad_logits,
        grad_row_stride, row_scales);
  });
}

template <typename scalar_t>
void token_backward_rows(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    TokenGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride) {
  constexpr int64_t kMaxBackwardRowsInLanesCols =
      max_backward_rows_in_lanes_cols<scalar_t>();
  if (logits.num_cols > kMaxBackwardRowsInLanesCols) {
    with_action_mask(logits, [&](auto masked) {
      token_backward_rows_along_lanes<decltype(masked)::value>(
          logits, row_begin, row_end, stats, grads, grad_logits,
          grad_row_stride);
    });
    return;
  }
  with_static_cols<kMaxBackwardRowsInLanesCols>(logits.num_cols, [&](auto cols) {
    token_backward_rows_in_lanes<decltype(cols)::value>(
        logits, row_begin, row_end, stats, grads, grad_logits,
        grad_row_stride);
  });
}

template <typename scalar_t>
void parameterized_forward_rows(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    acc_t<scalar_t>* expected) {
  if (logits.num_cols > kMaxRowsInLanesCols ||
      logits.scale != acc_t<scalar_t>(1)) {
    with_action_mask(logits, [&](auto masked) {
      if (logits.scale == acc_t<scalar_t>(1)) {
        forward_rows_along_lanes<false, decltype(masked)::value, true>(
            logits, row_begin, row_end, stats, {}, action_entropies, expected);
      } else {
        forward_rows_along_lanes<true, decltype(masked)::value, true>(
            logits, row_begin, row_end, stats, {}, action_entropies, expected);
      }
    });
    return;
  }
  with_static_cols<kMaxRowsInLanesCols>(logits.num_cols, [&](auto cols) {
    parameterized_forward_rows_in_lanes<decltype(cols)::value>(
        logits, row_begin, row_end, stats, action_entropies, expected);
  });
}

template <typename scalar_t>
void parameterized_backward_rows(
    LogitRows<scalar_t> logits,
    int64_t row_begin,
    int64_t row_end,
    RowStats<acc_t<scalar_t>> stats,
    ActionEntropies<acc_t<scalar_t>> action_entropies,
    ParameterizedGrads<acc_t<scalar_t>> grads,
    scalar_t* grad_logits,
    int64_t grad_row_stride,
    ActionEntropyGrads<acc_t<scalar_t>> grad_action_entropies) {
  constexpr int64_t W = AccVec<scalar_t>::size();
  const int64_t vectors = logits.num_cols / W;
  const bool in_registers = action_entropies.row_stride == 0 &&
      grad_action_entropies.row_stride == 0 && logits.num_cols % W == 0 &&
      vectors >= 1 && vectors <= 4;
  with_action_mask(logits, [&](auto masked) {
    constexpr bool kMasked = decltype(masked)::value;
    if (in_registers) {
      with_static_cols<4>(vectors, [&](auto c) {
        parameterized_backward_rows_shared_along_lanes<
            static_cast<int>(decltype(c)::value), kMasked>(
            logits, row_begin, row_end, stats, action_entropies, grads,
            grad_logits, grad_row_stride, grad_action_entropies);
      });
      return;
    }
    parameterized_backward_rows_along_lanes<kMasked>(
        logits, row_begin, row_end, stats, action_entropies, grads,
        grad_logits, grad_row_stride, grad_action_entropies);
  });
}

#define HEE_INSTANTIATE_ROW_KERNELS(scalar_t)                              \
  template acc_t<scalar_t> sum_values<scalar_t>(const scalar_t*, int64_t); \
  template void forward_rows<scalar_t>(                                    \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>,    \
      TakenLogProbs<acc_t<scalar_t>>);                                     \
  template void backward_rows<scalar_t>(                                   \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>,    \
      acc_t<scalar_t>, scalar_t*, int64_t, const acc_t<scalar_t>*);        \
  template void token_backward_rows<scalar_t>(                             \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>,    \
      TokenGrads<acc_t<scalar_t>>, scalar_t*, int64_t);                \
  template void parameterized_forward_rows<scalar_t>(                      \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>,    \
      ActionEntropies<acc_t<scalar_t>>, acc_t<scalar_t>*);                 \
  template void parameterized_backward_rows<scalar_t>(                     \
      LogitRows<scalar_t>, int64_t, int64_t, RowStats<acc_t<scalar_t>>,    \
      ActionEntropies<acc_t<scalar_t>>,                                    \
      ParameterizedGrads<acc_t<scalar_t>>, scalar_t*, int64_t,             \
      ActionEntropyGrads<acc_t<scalar_t>>);

HEE_INSTANTIATE_ROW_KERNELS(float)
HEE_INSTANTIATE_ROW_KERNELS(double)
HEE_INSTANTIATE_ROW_KERNELS(c10::Half)
HEE_INSTANTIATE_ROW_KERNELS(c10::BFloat16)

#undef HEE_INSTANTIATE_ROW_KERNELS

} // namespace HEE_ISA
} // namespace cpu
} // namespace hee

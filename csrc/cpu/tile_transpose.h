// In-register transposes of a tile of float32 rows with K columns, K a power
// of two up to 32 (and a few smaller K by permutes, further down), for the
// rows-in-lanes kernels: 16 rows on AVX-512, 8 on AVX2 (one row per lane).
//
// Why not hardware gathers: on the machines this was measured on (Zen 4) a
// 16-lane gather costs about as much as the exp of a whole vector, and the
// gathers were a large share of the small-K kernels' time. Nor scalar moves
// through a stack buffer (AVX2 has no gather worth using): the vector reloads
// of values just stored one by one cannot be forwarded from the store buffer
// and stall, and they were a large share of the AVX2 small-K forward
// (benchmarks/README.md, "Tile transposes", has both measurements). Here the
// tile is read with plain loads (K vectors, row-major) and split by log2(K)
// rounds of "unzip": each round separates even from odd columns, a fixed
// number of permutes per pair of vectors (2 on AVX-512, 4 on AVX2), so
// K * log2(K) or 2 K log2(K) permutes in all. Every loop is unrolled so that
// the vectors stay in registers: left as loops, GCC kept them on the stack
// and the transposes were slower than the gathers.
#pragma once

#ifndef CPU_CAPABILITY
#error "compile this header only in a per-ISA translation unit (one that defines CPU_CAPABILITY)"
#endif

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>

#include <cstdint>

namespace hee {
namespace cpu {
// One copy per ISA build, never merged by the linker with another build's
// (docs/design.md, "One library, three CPU builds").
inline namespace CPU_CAPABILITY {
namespace tile_transpose {

#if defined(CPU_CAPABILITY_AVX512)
using Vec = __m512;
constexpr int64_t kTileRows = 16;

inline Vec load(const float* p) {
  return _mm512_loadu_ps(p);
}
inline void store(float* p, Vec v) {
  _mm512_storeu_ps(p, v);
}
// even / odd: the even- / odd-indexed elements of the 32 values a then b.
inline void unzip(Vec a, Vec b, Vec& even, Vec& odd) {
  const __m512i even_index = _mm512_setr_epi32(
      0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_index = _mm512_setr_epi32(
      1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  even = _mm512_permutex2var_ps(a, even_index, b);
  odd = _mm512_permutex2var_ps(a, odd_index, b);
}
// The inverse: low / high = the first / last 16 of a0 b0 a1 b1 ... a15 b15.
inline void zip(Vec a, Vec b, Vec& low, Vec& high) {
  const __m512i low_index = _mm512_setr_epi32(
      0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high_index = _mm512_setr_epi32(
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  low = _mm512_permutex2var_ps(a, low_index, b);
  high = _mm512_permutex2var_ps(a, high_index, b);
}
#else
using Vec = __m256;
constexpr int64_t kTileRows = 8;

inline Vec load(const float* p) {
  return _mm256_loadu_ps(p);
}
inline void store(float* p, Vec v) {
  _mm256_storeu_ps(p, v);
}
// AVX2 has no two-source permute across 128-bit lanes: pick within the lanes
// (a0 a2 b0 b2 | a4 a6 b4 b6), then put the 64-bit pairs in order.
inline void unzip(Vec a, Vec b, Vec& even, Vec& odd) {
  const auto order_pairs = [](Vec v) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
  };
  even = order_pairs(_mm256_shuffle_ps(a, b, 0x88));
  odd = order_pairs(_mm256_shuffle_ps(a, b, 0xDD));
}
inline void zip(Vec a, Vec b, Vec& low, Vec& high) {
  // a0 b0 a1 b1 | a4 b4 a5 b5 and a2 b2 a3 b3 | a6 b6 a7 b7
  const Vec interleaved_low = _mm256_unpacklo_ps(a, b);
  const Vec interleaved_high = _mm256_unpackhi_ps(a, b);
  low = _mm256_permute2f128_ps(interleaved_low, interleaved_high, 0x20);
  high = _mm256_permute2f128_ps(interleaved_low, interleaved_high, 0x31);
}
#endif

constexpr bool is_power_of_two_up_to_32(int64_t K) {
  return K >= 1 && K <= 32 && (K & (K - 1)) == 0;
}

// The unzip rounds leave column k in vector bit_reverse(k).
constexpr int64_t bit_reverse(int64_t j, int64_t K) {
  int64_t reversed = 0;
  for (int64_t bit = 1; bit < K; bit <<= 1) {
    reversed = (reversed << 1) | ((j & bit) ? 1 : 0);
  }
  return reversed;
}

// columns[k][r] = rows[r * K + k] for the kTileRows contiguous rows at `rows`,
// K a power of two.
template <int64_t K>
inline void rows_to_columns_by_unzips(
    const float* rows, float (*columns)[kTileRows]) {
  static_assert(is_power_of_two_up_to_32(K));
  Vec v[K];
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    v[j] = load(rows + j * kTileRows);
  }
  // Each group of `size` vectors is a row-major tile; unzip it into its even
  // columns (first half of the group) and its odd columns (second half).
  #pragma GCC unroll 32
  for (int64_t size = K; size >= 2; size /= 2) {
    #pragma GCC unroll 32
    for (int64_t group = 0; group < K; group += size) {
      Vec unzipped[K];
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size / 2; ++p) {
        unzip(v[group + 2 * p], v[group + 2 * p + 1], unzipped[p],
              unzipped[size / 2 + p]);
      }
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size; ++p) {
        v[group + p] = unzipped[p];
      }
    }
  }
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    store(columns[bit_reverse(j, K)], v[j]);
  }
}

// The inverse: rows[r * K + k] = columns[k][r].
template <int64_t K>
inline void columns_to_rows_by_zips(
    const float (*columns)[kTileRows], float* rows) {
  static_assert(is_power_of_two_up_to_32(K));
  Vec v[K];
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    v[j] = load(columns[bit_reverse(j, K)]);
  }
  // The unzip rounds in reverse: interleave each group's halves.
  #pragma GCC unroll 32
  for (int64_t size = 2; size <= K; size *= 2) {
    #pragma GCC unroll 32
    for (int64_t group = 0; group < K; group += size) {
      Vec zipped[K];
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size / 2; ++p) {
        zip(v[group + p], v[group + size / 2 + p], zipped[2 * p],
            zipped[2 * p + 1]);
      }
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size; ++p) {
        v[group + p] = zipped[p];
      }
    }
  }
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    store(rows + j * kTileRows, v[j]);
  }
}

// Tiles whose K is not a power of two, up to 8 (K = 3, 5, 6, 7; AVX2 uses
// only K = 3, see has_register_transpose): one masked single-source permute
// (on AVX2 a permute and a blend) per pair of (column, source vector), at most
// K^2 in all. Read as K vectors, the tile holds element (r, k) at flat index
// r K + k: lane (r K + k) % W of vector (r K + k) / W. Against the other ways
// (AVX-512: a copy of the tile then a hardware gather per column in, scalar
// stores out; AVX2: scalar moves through a stack buffer), forward and
// backward got faster on AVX-512 at these K. Past K = 8 the K^2 permutes cost
// more than the gathers (benchmarks/README.md, "Tile transposes").
constexpr bool has_permute_path(int64_t K) {
  return K >= 3 && K <= 8 && !is_power_of_two_up_to_32(K);
}

template <int64_t K>
struct PermuteTables {
  // rows -> columns: column k takes the lanes in mask[k][s] of vector s, at
  // index[k][s].
  int32_t to_columns_index[K][K][kTileRows] = {};
  uint16_t to_columns_mask[K][K] = {};
  // columns -> rows: output vector j takes the lanes in mask[j][k] of
  // column k, at index[j][k].
  int32_t to_rows_index[K][K][kTileRows] = {};
  uint16_t to_rows_mask[K][K] = {};
};

template <int64_t K>
constexpr PermuteTables<K> permute_tables() {
  PermuteTables<K> t;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t r = 0; r < kTileRows; ++r) {
      const int64_t flat = r * K + k;
      t.to_columns_index[k][flat / kTileRows][r] =
          static_cast<int32_t>(flat % kTileRows);
      t.to_columns_mask[k][flat / kTileRows] |= static_cast<uint16_t>(1u << r);
    }
  }
  for (int64_t j = 0; j < K; ++j) {
    for (int64_t lane = 0; lane < kTileRows; ++lane) {
      const int64_t flat = j * kTileRows + lane;
      t.to_rows_index[j][flat % K][lane] = static_cast<int32_t>(flat / K);
      t.to_rows_mask[j][flat % K] |= static_cast<uint16_t>(1u << lane);
    }
  }
  return t;
}

// source permuted by index, in the lanes of mask (bit r: lane r); the other
// lanes keep `into`.
inline Vec permute_into(Vec into, uint16_t mask, const int32_t* index, Vec source) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_mask_permutexvar_ps(into, mask, _mm512_loadu_si512(index), source);
#else
  // AVX2 blends by the sign bit of each lane: lane r all ones where bit r is
  // set. The masks come from constant tables, so this folds to a constant.
  const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i lanes = _mm256_cmpeq_epi32(
      _mm256_and_si256(_mm256_set1_epi32(mask), lane_bits), lane_bits);
  const Vec permuted = _mm256_permutevar8x32_ps(
      source, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(index)));
  return _mm256_blendv_ps(into, permuted, _mm256_castsi256_ps(lanes));
#endif
}

// As rows_to_columns_by_unzips, for has_permute_path(K).
template <int64_t K>
inline void rows_to_columns_by_permutes(
    const float* rows, float (*columns)[kTileRows]) {
  static_assert(has_permute_path(K));
  static constexpr PermuteTables<K> t = permute_tables<K>();
  Vec v[K];
  #pragma GCC unroll 8
  for (int64_t j = 0; j < K; ++j) {
    v[j] = load(rows + j * kTileRows);
  }
  #pragma GCC unroll 8
  for (int64_t k = 0; k < K; ++k) {
    Vec column = Vec{};
    #pragma GCC unroll 8
    for (int64_t s = 0; s < K; ++s) {
      if (t.to_columns_mask[k][s] != 0) {
        column = permute_into(
            column, t.to_columns_mask[k][s], t.to_columns_index[k][s], v[s]);
      }
    }
    store(columns[k], column);
  }
}

// As columns_to_rows_by_zips, for has_permute_path(K).
template <int64_t K>
inline void columns_to_rows_by_permutes(
    const float (*columns)[kTileRows], float* rows) {
  static_assert(has_permute_path(K));
  static constexpr PermuteTables<K> t = permute_tables<K>();
  Vec c[K];
  #pragma GCC unroll 8
  for (int64_t k = 0; k < K; ++k) {
    c[k] = load(columns[k]);
  }
  #pragma GCC unroll 8
  for (int64_t j = 0; j < K; ++j) {
    Vec out = Vec{};
    #pragma GCC unroll 8
    for (int64_t k = 0; k < K; ++k) {
      if (t.to_rows_mask[j][k] != 0) {
        out = permute_into(
            out, t.to_rows_mask[j][k], t.to_rows_index[j][k], c[k]);
      }
    }
    store(rows + j * kTileRows, out);
  }
}

// Whether a tile of K columns has an in-register transpose on this build. On
// AVX2 the permutes (each with a blend) pay only at K = 3. At K = 5 they were
// no faster, and at K = 6 and 7 the backward's permutes back into rows were
// slower (benchmarks/README.md, "Tile transposes").
constexpr bool has_register_transpose(int64_t K) {
#if defined(CPU_CAPABILITY_AVX512)
  return is_power_of_two_up_to_32(K) || has_permute_path(K);
#else
  return is_power_of_two_up_to_32(K) || K == 3;
#endif
}

// columns[k][r] = rows[r * K + k], for has_register_transpose(K).
template <int64_t K>
inline void rows_to_columns(const float* rows, float (*columns)[kTileRows]) {
  if constexpr (is_power_of_two_up_to_32(K)) {
    rows_to_columns_by_unzips<K>(rows, columns);
  } else {
    rows_to_columns_by_permutes<K>(rows, columns);
  }
}

// rows[r * K + k] = columns[k][r], for has_register_transpose(K).
template <int64_t K>
inline void columns_to_rows(const float (*columns)[kTileRows], float* rows) {
  if constexpr (is_power_of_two_up_to_32(K)) {
    columns_to_rows_by_zips<K>(columns, rows);
  } else {
    columns_to_rows_by_permutes<K>(columns, rows);
  }
}

} // namespace tile_transpose
} // namespace CPU_CAPABILITY
} // namespace cpu
} // namespace hee
#endif

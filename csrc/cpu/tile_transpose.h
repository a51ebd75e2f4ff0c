// In-register transposes of a tile of float32 rows with K columns, K a power
// of two up to 32 (and a few smaller K by permutes, further down), for the
// rows-in-lanes kernels: 16 rows on AVX-512, 8 on AVX2 (one row per lane).
// Rows are contiguous, or for K a power of two any row stride apart (one
// sub-head's columns of wider rows, a slice: strided_rows_to_columns).
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
#include <cstring>

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

// The first 8 bytes at p (two floats), as the low half of a double lane.
inline double load_pair(const float* p) {
  double pair;
  std::memcpy(&pair, p, sizeof(pair));
  return pair;
}

// Vector j of a tile of kTileRows rows of K floats (K a power of two) as the
// transposes read it from contiguous rows: floats [j * kTileRows, (j + 1) *
// kTileRows) of the rows laid out one after another. Here the rows are
// row_stride floats apart: one load where the vector lies within a row
// (K >= kTileRows), else the kTileRows / K rows it spans, put together.
template <int64_t K>
inline Vec load_rows_vector(const float* rows, int64_t row_stride, int64_t j) {
  if constexpr (K >= kTileRows) {
    return load(rows + (j * kTileRows / K) * row_stride + (j * kTileRows) % K);
  } else {
    const float* r = rows + j * (kTileRows / K) * row_stride;
    const auto row = [&](int64_t i) { return r + i * row_stride; };
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (K == 8) {
      return _mm512_castpd_ps(_mm512_insertf64x4(
          _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(row(0)))),
          _mm256_castps_pd(_mm256_loadu_ps(row(1))), 1));
    } else if constexpr (K == 4) {
      Vec v = _mm512_castps128_ps512(_mm_loadu_ps(row(0)));
      v = _mm512_insertf32x4(v, _mm_loadu_ps(row(1)), 1);
      v = _mm512_insertf32x4(v, _mm_loadu_ps(row(2)), 2);
      return _mm512_insertf32x4(v, _mm_loadu_ps(row(3)), 3);
    } else if constexpr (K == 2) {
      return _mm512_castpd_ps(_mm512_set_pd(
          load_pair(row(7)), load_pair(row(6)), load_pair(row(5)),
          load_pair(row(4)), load_pair(row(3)), load_pair(row(2)),
          load_pair(row(1)), load_pair(row(0))));
    } else {
      return _mm512_set_ps(
          *row(15), *row(14), *row(13), *row(12), *row(11), *row(10), *row(9),
          *row(8), *row(7), *row(6), *row(5), *row(4), *row(3), *row(2),
          *row(1), *row(0));
    }
#else
    if constexpr (K == 4) {
      return _mm256_set_m128(_mm_loadu_ps(row(1)), _mm_loadu_ps(row(0)));
    } else if constexpr (K == 2) {
      return _mm256_castpd_ps(_mm256_set_pd(
          load_pair(row(3)), load_pair(row(2)), load_pair(row(1)),
          load_pair(row(0))));
    } else {
      return _mm256_set_ps(
          *row(7), *row(6), *row(5), *row(4), *row(3), *row(2), *row(1),
          *row(0));
    }
#endif
  }
}

// The inverse: vector j of a tile of contiguous rows written to rows
// row_stride floats apart.
template <int64_t K>
inline void store_rows_vector(float* rows, int64_t row_stride, int64_t j, Vec v) {
  if constexpr (K >= kTileRows) {
    store(rows + (j * kTileRows / K) * row_stride + (j * kTileRows) % K, v);
  } else {
    float* r = rows + j * (kTileRows / K) * row_stride;
    const auto row = [&](int64_t i) { return r + i * row_stride; };
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (K == 8) {
      _mm256_storeu_ps(row(0), _mm512_castps512_ps256(v));
      _mm256_storeu_ps(
          row(1),
          _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
      return;
    } else if constexpr (K == 4) {
      _mm_storeu_ps(row(0), _mm512_castps512_ps128(v));
      _mm_storeu_ps(row(1), _mm512_extractf32x4_ps(v, 1));
      _mm_storeu_ps(row(2), _mm512_extractf32x4_ps(v, 2));
      _mm_storeu_ps(row(3), _mm512_extractf32x4_ps(v, 3));
      return;
    }
#else
    if constexpr (K == 4) {
      _mm_storeu_ps(row(0), _mm256_castps256_ps128(v));
      _mm_storeu_ps(row(1), _mm256_extractf128_ps(v, 1));
      return;
    }
#endif
    // Narrower rows: the vector through the stack, read back in pieces (a
    // wide store forwards to narrow loads).
    alignas(64) float values[kTileRows];
    store(values, v);
    for (int64_t i = 0; i < kTileRows / K; ++i) {
      std::memcpy(row(i), values + i * K, K * sizeof(float));
    }
  }
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
// kStrided: the rows are row_stride floats apart (load_rows_vector).
template <int64_t K, bool kStrided = false>
inline void rows_to_columns_by_unzips(
    const float* rows, float (*columns)[kTileRows], int64_t row_stride = K) {
  static_assert(is_power_of_two_up_to_32(K));
  Vec v[K];
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    if constexpr (kStrided) {
      v[j] = load_rows_vector<K>(rows, row_stride, j);
    } else {
      v[j] = load(rows + j * kTileRows);
    }
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

// The inverse: rows[r * row_stride + k] = columns[k][r].
template <int64_t K, bool kStrided = false>
inline void columns_to_rows_by_zips(
    const float (*columns)[kTileRows], float* rows, int64_t row_stride = K) {
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
    if constexpr (kStrided) {
      store_rows_vector<K>(rows, row_stride, j, v[j]);
    } else {
      store(rows + j * kTileRows, v[j]);
    }
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

// columns[k][r] = rows[r * row_stride + k] and its inverse, for rows any
// row_stride >= K floats apart (one sub-head's columns of wider rows, a
// slice), K a power of two up to 32.
template <int64_t K>
inline void strided_rows_to_columns(
    const float* rows, int64_t row_stride, float (*columns)[kTileRows]) {
  rows_to_columns_by_unzips<K, true>(rows, columns, row_stride);
}
template <int64_t K>
inline void columns_to_strided_rows(
    const float (*columns)[kTileRows], float* rows, int64_t row_stride) {
  columns_to_rows_by_zips<K, true>(columns, rows, row_stride);
}

} // namespace tile_transpose
} // namespace CPU_CAPABILITY
} // namespace cpu
} // namespace hee
#endif

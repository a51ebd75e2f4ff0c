// In-register transposes of a tile of 16 float32 rows with K columns, K a
// power of two up to 32, for the AVX-512 rows-in-lanes kernels.
//
// Why not hardware gathers: on the machines this was measured on (Zen 4) a
// 16-lane gather costs about as much as the exp of a whole vector, and the
// gathers were half the small-K kernels' time. Here the tile is read with
// plain loads (K vectors, row-major) and split by log2(K) rounds of
// "unzip": each round separates even from odd columns with two two-source
// permutes per pair of vectors, so K * log2(K) permutes in all. Every loop is
// unrolled so that the vectors stay in registers: left as loops, GCC kept
// them on the stack and the transposes were slower than the gathers.
#pragma once

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>

#include <cstdint>

namespace hee {
namespace cpu {
namespace tile_transpose {

constexpr int64_t kTileRows = 16;

constexpr bool has_fast_path(int64_t K) {
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

// columns[k][r] = rows[r * K + k] for the 16 contiguous rows at `rows`.
template <int64_t K>
inline void rows_to_columns(const float* rows, float (*columns)[kTileRows]) {
  static_assert(has_fast_path(K));
  const __m512i even = _mm512_setr_epi32(
      0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(
      1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 v[K];
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    v[j] = _mm512_loadu_ps(rows + j * kTileRows);
  }
  // Each group of `size` vectors is a row-major tile; unzip it into its even
  // columns (first half of the group) and its odd columns (second half).
  #pragma GCC unroll 32
  for (int64_t size = K; size >= 2; size /= 2) {
    #pragma GCC unroll 32
    for (int64_t group = 0; group < K; group += size) {
      __m512 unzipped[K];
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size / 2; ++p) {
        const __m512 a = v[group + 2 * p];
        const __m512 b = v[group + 2 * p + 1];
        unzipped[p] = _mm512_permutex2var_ps(a, even, b);
        unzipped[size / 2 + p] = _mm512_permutex2var_ps(a, odd, b);
      }
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size; ++p) {
        v[group + p] = unzipped[p];
      }
    }
  }
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    _mm512_store_ps(columns[bit_reverse(j, K)], v[j]);
  }
}

// The inverse: rows[r * K + k] = columns[k][r].
template <int64_t K>
inline void columns_to_rows(const float (*columns)[kTileRows], float* rows) {
  static_assert(has_fast_path(K));
  const __m512i low = _mm512_setr_epi32(
      0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high = _mm512_setr_epi32(
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512 v[K];
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    v[j] = _mm512_load_ps(columns[bit_reverse(j, K)]);
  }
  // The unzip rounds in reverse: interleave each group's halves.
  #pragma GCC unroll 32
  for (int64_t size = 2; size <= K; size *= 2) {
    #pragma GCC unroll 32
    for (int64_t group = 0; group < K; group += size) {
      __m512 zipped[K];
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size / 2; ++p) {
        const __m512 a = v[group + p];
        const __m512 b = v[group + size / 2 + p];
        zipped[2 * p] = _mm512_permutex2var_ps(a, low, b);
        zipped[2 * p + 1] = _mm512_permutex2var_ps(a, high, b);
      }
      #pragma GCC unroll 32
      for (int64_t p = 0; p < size; ++p) {
        v[group + p] = zipped[p];
      }
    }
  }
  #pragma GCC unroll 32
  for (int64_t j = 0; j < K; ++j) {
    _mm512_storeu_ps(rows + j * kTileRows, v[j]);
  }
}

} // namespace tile_transpose
} // namespace cpu
} // namespace hee
#endif

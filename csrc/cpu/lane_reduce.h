// Lane reductions of four float32 vectors at once, for the rows-along-lanes
// forward (K > 32): each of four interleaved rows ends its passes with a
// vector of per-lane partials (its max, then each of its two moments), and
// every one must be reduced across its lanes.
//
// Why not one reduction per row: a 16-lane tree costs 4 shuffles and 4 ops
// per row, and at K = 64 (four vectors of work per row) the three reductions
// of each row were a large share of the forward's vector instructions. Here
// a tree over the four vectors merges two of them per shuffle pair, so four
// rows take 9 shuffles and 5 ops on AVX-512 (8 and 4 on AVX2) instead of
// 32 (24). That share, counted in the compiled loop, and the forward's time
// before and after (with a row max that need not propagate NaN) are in
// benchmarks/README.md, "Lane reductions".
// The order of the operations is fixed, so results do not depend on the
// calls around them.
#pragma once

#ifndef CPU_CAPABILITY
#error "compile this header only in a per-ISA translation unit (one that defines CPU_CAPABILITY)"
#endif

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>

namespace hee {
namespace cpu {
// One copy per ISA build, never merged by the linker with another build's
// (docs/design.md, "One library, three CPU builds").
inline namespace CPU_CAPABILITY {
namespace lane_reduce {

#if defined(CPU_CAPABILITY_AVX512)
// out[r] = op over the 16 lanes of v_r, r = 0..3; op combines two vectors
// lane by lane.
template <typename Op>
inline void each_of_four(
    __m512 v0, __m512 v1, __m512 v2, __m512 v3, float* out, Op op) {
  // Halve each vector and pack two per register: quarters 0-1 hold the
  // first vector's partials, quarters 2-3 the second's.
  const __m512 v01 = op(
      _mm512_shuffle_f32x4(v0, v1, 0x44), _mm512_shuffle_f32x4(v0, v1, 0xEE));
  const __m512 v23 = op(
      _mm512_shuffle_f32x4(v2, v3, 0x44), _mm512_shuffle_f32x4(v2, v3, 0xEE));
  // Quarter r now holds four partials of v_r.
  __m512 all = op(
      _mm512_shuffle_f32x4(v01, v23, 0x88),
      _mm512_shuffle_f32x4(v01, v23, 0xDD));
  all = op(all, _mm512_permute_ps(all, 0x4E));
  all = op(all, _mm512_permute_ps(all, 0xB1));
  const __m512i first_of_each_quarter =
      _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  _mm_storeu_ps(out, _mm512_castps512_ps128(
                         _mm512_permutexvar_ps(first_of_each_quarter, all)));
}
#else
// out[r] = op over the 8 lanes of v_r, r = 0..3.
template <typename Op>
inline void each_of_four(
    __m256 v0, __m256 v1, __m256 v2, __m256 v3, float* out, Op op) {
  // Low 128 bits: partials of the first vector; high: of the second.
  const __m256 v01 = op(
      _mm256_permute2f128_ps(v0, v1, 0x20),
      _mm256_permute2f128_ps(v0, v1, 0x31));
  const __m256 v23 = op(
      _mm256_permute2f128_ps(v2, v3, 0x20),
      _mm256_permute2f128_ps(v2, v3, 0x31));
  // Lanes 0-1: v0, 2-3: v2, 4-5: v1, 6-7: v3.
  __m256 all = op(
      _mm256_shuffle_ps(v01, v23, 0x44), _mm256_shuffle_ps(v01, v23, 0xEE));
  all = op(all, _mm256_permute_ps(all, 0xB1));
  const __m256i first_of_each_pair = _mm256_setr_epi32(0, 4, 2, 6, 0, 0, 0, 0);
  _mm_storeu_ps(out, _mm256_castps256_ps128(
                         _mm256_permutevar8x32_ps(all, first_of_each_pair)));
}
#endif

} // namespace lane_reduce
} // namespace CPU_CAPABILITY
} // namespace cpu
} // namespace hee
#endif

// The x86 intrinsics, for the per-ISA row kernels: included before any other
// header, so that ATen's vector headers find them already declared.
//
// GCC 12 warns that the "undefined" pass-through operand inside the AVX-512
// intrinsics' own definitions (_mm512_max_ps and friends, in GCC's
// avx512fintrin.h) is used uninitialized once they are inlined: a false
// positive of that compiler (GCC bug 105593), hundreds of times per build.
// The warning is silenced for GCC's header only, not for this project's code.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// The row kernels of the running CPU's ISA build (isa.h chooses it), for the
// CPU drivers of both ops.
#pragma once

#include "isa.h"
#include "row_kernels.h"

namespace hee {
namespace cpu {

// The row kernels of one ISA build for one dtype.
template <typename scalar_t>
struct RowKernels {
  ForwardRowsFn<scalar_t> forward;
  BackwardRowsFn<scalar_t> backward;
  TokenBackwardRowsFn<scalar_t> token_backward;
  SumValuesFn<scalar_t> sum;
  ParameterizedForwardRowsFn<scalar_t> parameterized_forward;
  ParameterizedBackwardRowsFn<scalar_t> parameterized_backward;
};

template <typename scalar_t>
RowKernels<scalar_t> row_kernels(CpuIsa isa) {
#ifndef HEE_GENERIC_CPU_ONLY
  switch (isa) {
    case CpuIsa::kAvx512:
      return {&avx512::forward_rows<scalar_t>, &avx512::backward_rows<scalar_t>,
              &avx512::token_backward_rows<scalar_t>,
              &avx512::sum_values<scalar_t>,
              &avx512::parameterized_forward_rows<scalar_t>,
              &avx512::parameterized_backward_rows<scalar_t>};
    case CpuIsa::kAvx2:
      return {&avx2::forward_rows<scalar_t>, &avx2::backward_rows<scalar_t>,
              &avx2::token_backward_rows<scalar_t>,
              &avx2::sum_values<scalar_t>,
              &avx2::parameterized_forward_rows<scalar_t>,
              &avx2::parameterized_backward_rows<scalar_t>};
    case CpuIsa::kGeneric:
      break;
  }
#endif
  return {&generic::forward_rows<scalar_t>, &generic::backward_rows<scalar_t>,
          &generic::token_backward_rows<scalar_t>,
          &generic::sum_values<scalar_t>,
          &generic::parameterized_forward_rows<scalar_t>,
          &generic::parameterized_backward_rows<scalar_t>};
}

// The action entropies (ActionEntropiesFn) of scalar_t parameters into T, of
// one ISA build.
template <typename scalar_t, typename T>
ActionEntropiesFn<scalar_t, T> action_entropies_kernel(CpuIsa isa) {
#ifndef HEE_GENERIC_CPU_ONLY
  switch (isa) {
    case CpuIsa::kAvx512:
      return &avx512::action_entropies<scalar_t, T>;
    case CpuIsa::kAvx2:
      return &avx2::action_entropies<scalar_t, T>;
    case CpuIsa::kGeneric:
      break;
  }
#endif
  return &generic::action_entropies<scalar_t, T>;
}

} // namespace cpu
} // namespace hee

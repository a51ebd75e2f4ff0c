#include "isa.h"

#include <cstdlib>
#include <string>

#include <c10/util/Exception.h>

namespace hee {
namespace cpu {
namespace {

bool cpu_supports(CpuIsa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  switch (isa) {
    case CpuIsa::kGeneric:
      return true;
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
          __builtin_cpu_supports("f16c");
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") &&
          __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == CpuIsa::kGeneric;
#endif
}

CpuIsa widest_supported_isa() {
  if (cpu_supports(CpuIsa::kAvx512)) {
    return CpuIsa::kAvx512;
  }
  return cpu_supports(CpuIsa::kAvx2) ? CpuIsa::kAvx2 : CpuIsa::kGeneric;
}

CpuIsa parse_requested_isa(const std::string& name) {
  CpuIsa isa = CpuIsa::kGeneric;
  if (name == "avx2") {
    isa = CpuIsa::kAvx2;
  } else if (name == "avx512") {
    isa = CpuIsa::kAvx512;
  } else {
    TORCH_CHECK_VALUE(
        name == "generic",
        "HEE_CPU_ISA must be one of generic, avx2, avx512; got '", name, "'");
  }
  TORCH_CHECK_VALUE(
      cpu_supports(isa), "HEE_CPU_ISA=", name,
      " was requested but this CPU does not support it");
  return isa;
}

} // namespace

CpuIsa selected_cpu_isa() {
  // Read on every call (a getenv, once per op call) so that tests can switch
  // builds within one process.
  const char* requested = std::getenv("HEE_CPU_ISA");
  if (requested == nullptr || *requested == '\0') {
    static const CpuIsa widest = widest_supported_isa();
    return widest;
  }
  return parse_requested_isa(requested);
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric:
      return "generic";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

} // namespace cpu
} // namespace hee

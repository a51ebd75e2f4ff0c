// Which build of the row kernels runs on this CPU.
#pragma once

namespace hee {
namespace cpu {

enum class CpuIsa { kGeneric, kAvx2, kAvx512 };

// The widest ISA this CPU supports, unless the environment variable
// HEE_CPU_ISA=generic|avx2|avx512 forces one (a ValueError if the CPU lacks
// it).
CpuIsa selected_cpu_isa();

const char* cpu_isa_name(CpuIsa isa);

} // namespace cpu
} // namespace hee

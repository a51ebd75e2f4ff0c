// Which build of the row kernels runs on this CPU.
#pragma once

#include <string>

namespace hee {
namespace cpu {

enum class CpuIsa { kGeneric, kAvx2, kAvx512 };

// The build the op runs, chosen once, when the library loads: the widest
// ISA this CPU supports, unless the environment says otherwise.
// HEE_CPU_ISA=generic|avx2|avx512 forces one (if this CPU lacks it, or the
// value is unknown, every op call raises a ValueError saying so);
// ATEN_CPU_CAPABILITY=default|avx2|avx512, PyTorch's own switch, caps the
// choice. Read once: an op call costs no getenv.
CpuIsa selected_cpu_isa();

// Switches to another build for the rest of the process (tests, benchmark
// comparisons): ValueError if the name is unknown or this CPU lacks it.
void select_cpu_isa(const std::string& name);

const char* cpu_isa_name(CpuIsa isa);

} // namespace cpu
} // namespace hee

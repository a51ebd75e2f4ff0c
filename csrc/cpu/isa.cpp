#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <optional>
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

CpuIsa widest_supported_at_most(CpuIsa cap) {
  for (CpuIsa isa : {CpuIsa::kAvx512, CpuIsa::kAvx2}) {
    if (static_cast<int>(isa) <= static_cast<int>(cap) && cpu_supports(isa)) {
      return isa;
    }
  }
  return CpuIsa::kGeneric;
}

std::optional<CpuIsa> isa_named(const std::string& name) {
  if (name == "generic") {
    return CpuIsa::kGeneric;
  }
  if (name == "avx2") {
    return CpuIsa::kAvx2;
  }
  if (name == "avx512") {
    return CpuIsa::kAvx512;
  }
  return std::nullopt;
}

// An ISA that cannot be used: the error every op call raises.
std::string unusable_isa_error(const std::string& name) {
  if (!isa_named(name).has_value()) {
    return "HEE_CPU_ISA must be one of generic, avx2, avx512; got '" + name +
        "'";
  }
  return "HEE_CPU_ISA=" + name +
      " was requested but this CPU does not support it";
}

// What the environment asks for when the library loads. ATen's values are
// "default", "avx2", "avx512" (others, such as "zvector", are not x86 ISAs
// and leave the choice alone).
struct Selection {
  CpuIsa isa = CpuIsa::kGeneric;
  std::string error;  // non-empty: HEE_CPU_ISA named an ISA we cannot run
};

Selection selection_from_environment() {
  const char* forced = std::getenv("HEE_CPU_ISA");
  if (forced != nullptr && *forced != '\0') {
    const std::optional<CpuIsa> isa = isa_named(forced);
    if (isa.has_value() && cpu_supports(*isa)) {
      return {*isa, ""};
    }
    return {CpuIsa::kGeneric, unusable_isa_error(forced)};
  }
  CpuIsa cap = CpuIsa::kAvx512;
  const char* aten = std::getenv("ATEN_CPU_CAPABILITY");
  if (aten != nullptr) {
    const std::string value = aten;
    if (value == "default") {
      cap = CpuIsa::kGeneric;
    } else if (value == "avx2") {
      cap = CpuIsa::kAvx2;
    }
  }
  return {widest_supported_at_most(cap), ""};
}

// Chosen while the library loads (a static initializer), so that no op call
// reads the environment.
struct SelectedIsa {
  std::atomic<CpuIsa> isa;
  std::atomic<bool> unusable;
  std::string error;  // written only while loading

  SelectedIsa() {
    Selection s = selection_from_environment();
    isa.store(s.isa);
    unusable.store(!s.error.empty());
    error = std::move(s.error);
  }
};

SelectedIsa& selected() {
  static SelectedIsa instance;
  return instance;
}

// Touches the selection while the library loads.
[[maybe_unused]] const bool chosen_at_load = (selected(), true);

} // namespace

CpuIsa selected_cpu_isa() {
  SelectedIsa& s = selected();
  TORCH_CHECK_VALUE(!s.unusable.load(std::memory_order_relaxed), s.error);
  return s.isa.load(std::memory_order_relaxed);
}

void select_cpu_isa(const std::string& name) {
  const std::optional<CpuIsa> isa = isa_named(name);
  TORCH_CHECK_VALUE(
      isa.has_value(),
      "_set_cpu_isa: isa must be one of generic, avx2, avx512; got '", name,
      "'");
  TORCH_CHECK_VALUE(
      cpu_supports(*isa), "_set_cpu_isa: this CPU does not support '", name,
      "'");
  SelectedIsa& s = selected();
  s.isa.store(*isa);
  s.unusable.store(false);
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

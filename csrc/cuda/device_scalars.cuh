// Plain descriptions of the tensors the CUDA kernels read and write, and the
// loads and stores of single values whose dtype is known only at run time
// (0-dim outputs, upstream gradients, the coefficient, log_std). Free of
// ATen, so that tests/cuda_emulation/ compiles the kernels for the host.
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "../accumulate_type.h"
#include "../entropy_math.h"

namespace hee {
namespace cuda {

enum class DType : int32_t { kFloat = 0, kDouble = 1, kHalf = 2, kBFloat16 = 3 };

HEE_HOST_DEVICE double load_as_double(
    const void* values,
    DType dtype,
    int64_t index) {
  switch (dtype) {
    case DType::kFloat:
      return static_cast<const float*>(values)[index];
    case DType::kDouble:
      return static_cast<const double*>(values)[index];
    case DType::kHalf:
      return static_cast<float>(static_cast<const c10::Half*>(values)[index]);
    case DType::kBFloat16:
      return static_cast<float>(
          static_cast<const c10::BFloat16*>(values)[index]);
  }
  return 0.0;
}

HEE_HOST_DEVICE void store_from_double(
    void* values,
    DType dtype,
    int64_t index,
    double value) {
  switch (dtype) {
    case DType::kFloat:
      static_cast<float*>(values)[index] = static_cast<float>(value);
      return;
    case DType::kDouble:
      static_cast<double*>(values)[index] = value;
      return;
    case DType::kHalf:
      static_cast<c10::Half*>(values)[index] =
          c10::Half(static_cast<float>(value));
      return;
    case DType::kBFloat16:
      static_cast<c10::BFloat16*>(values)[index] =
          c10::BFloat16(static_cast<float>(value));
      return;
  }
}

// A 0-dim (or absent) value on the device, read by every thread that needs
// it: it is never copied to the host, so no call syncs.
struct DeviceScalar {
  const void* values = nullptr;  // nullptr: absent, reads as 0
  DType dtype = DType::kFloat;

  HEE_HOST_DEVICE double read() const {
    return values == nullptr ? 0.0 : load_as_double(values, dtype, 0);
  }
};

// The entropy coefficient: on the device (0-dim, or [2] with a stride), or
// values read on the host from a 0-dim CPU tensor.
struct Coefficients {
  const void* values = nullptr;  // nullptr: use host_values
  DType dtype = DType::kFloat;
  bool per_head = false;
  int64_t stride = 1;
  math::HeadCoefficients host_values{0.0, 0.0};

  HEE_HOST_DEVICE math::HeadCoefficients read() const {
    if (values == nullptr) {
      return host_values;
    }
    const double discrete = load_as_double(values, dtype, 0);
    return {discrete,
            per_head ? load_as_double(values, dtype, stride) : discrete};
  }
};

// Per-row weights on the device, of any floating dtype, contiguous.
struct RowWeights {
  const void* values = nullptr;  // nullptr: every row weighs 1
  DType dtype = DType::kFloat;
  int64_t count = 0;  // B

  HEE_HOST_DEVICE bool present() const {
    return values != nullptr;
  }
  HEE_HOST_DEVICE double at(int64_t row) const {
    return load_as_double(values, dtype, row);
  }
};

// The denominator of a batch mean: the count of its terms, known on the
// host, the sum of the row weights, which a kernel computed on the device,
// or the caller's mean_denominator, read where it lives (no sync).
struct MeanDenominator {
  const double* device_value = nullptr;  // nullptr: host_value
  double host_value = 1.0;
  DeviceScalar given;  // where present, read instead of the two above

  HEE_HOST_DEVICE double read() const {
    if (given.values != nullptr) {
      return given.read();
    }
    return device_value == nullptr ? host_value : *device_value;
  }
};

// What the finish needs of one sub-head (discrete_sizes): where its partial
// sums of row entropies lie, the normalizer of all its rows (1, or
// math::entropy_normalizer of its size where every action is allowed) and
// its collapse threshold. Known on the host, it reaches the device with the
// head's row launch, which writes it to the workspace (docs/design.md, "The
// CUDA kernels"): the finish reads any number of them without a copy.
struct SubHeadRecord {
  int64_t first_partial = 0;
  int64_t num_partials = 0;
  double entropy_scale = 1.0;
  bool has_threshold = false;
  double threshold = 0.0;
};

} // namespace cuda
} // namespace hee

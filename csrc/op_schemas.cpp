// The schemas of the two ops, written out from their argument lists
// (op_arguments.h): for TORCH_LIBRARY (ops.cpp) and for test-only libraries
// that register the same kernels under another namespace.
#include <initializer_list>
#include <string>

#include "op_signatures.h"

namespace hee {
namespace {

std::string joined(std::initializer_list<std::string> parts) {
  std::string out;
  for (const std::string& part : parts) {
    out += out.empty() ? part : ", " + part;
  }
  return out;
}

} // namespace

#define HEE_SCHEMA_INPUT(type, name, schema_type, ...) \
  std::string(schema_type " " #name),
#define HEE_SCHEMA_TRAILING(kind, type, name, schema_type, value) \
  std::string(schema_type " " #name "=" value),
#define HEE_SCHEMA_TRAILING_WITHOUT_DEFAULT(kind, type, name, schema_type, ...) \
  std::string(schema_type " " #name),
#define HEE_SCHEMA_OUTPUT(name) std::string("Tensor " #name),
#define HEE_SCHEMA_UPSTREAM_GRAD(name) std::string("Tensor? grad_" #name),
#define HEE_SCHEMA_SAVED_OUTPUT(name, is_output) std::string("Tensor " #name),
#define HEE_SCHEMA_INPUT_GRAD(type, name, ...) \
  std::string("Tensor grad_" #name),

std::string loss_forward_schema(const std::string& name) {
  return name + "(" +
      joined({HEE_DIFFERENTIABLE_INPUTS(HEE_SCHEMA_INPUT)
                  HEE_TRAILING_ARGUMENTS(HEE_SCHEMA_TRAILING)}) +
      ") -> (" +
      joined({HEE_LOSS_COMPONENTS(HEE_SCHEMA_OUTPUT)
                  HEE_NONDIFFERENTIABLE_OUTPUTS(HEE_SCHEMA_OUTPUT)}) +
      ")";
}

std::string loss_backward_schema(const std::string& name) {
  return name + "(" +
      joined({HEE_LOSS_COMPONENTS(HEE_SCHEMA_UPSTREAM_GRAD)
                  HEE_DIFFERENTIABLE_INPUTS(HEE_SCHEMA_INPUT)
                      HEE_SAVED_OUTPUTS(HEE_SCHEMA_SAVED_OUTPUT) "bool[" +
                  std::to_string(kNumDifferentiableInputs) + "] output_mask",
              HEE_TRAILING_ARGUMENTS(HEE_SCHEMA_TRAILING_WITHOUT_DEFAULT)}) +
      ") -> (" + joined({HEE_DIFFERENTIABLE_INPUTS(HEE_SCHEMA_INPUT_GRAD)}) +
      ")";
}

#undef HEE_SCHEMA_INPUT
#undef HEE_SCHEMA_TRAILING
#undef HEE_SCHEMA_TRAILING_WITHOUT_DEFAULT
#undef HEE_SCHEMA_OUTPUT
#undef HEE_SCHEMA_UPSTREAM_GRAD
#undef HEE_SCHEMA_SAVED_OUTPUT
#undef HEE_SCHEMA_INPUT_GRAD

} // namespace hee

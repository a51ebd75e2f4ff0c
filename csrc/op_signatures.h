// Everything about the two ops' arguments that follows from their lists in
// op_arguments.h: the argument structs every kernel (Meta, CPU, CUDA,
// Autograd) takes, the schemas, the unboxed signatures the dispatcher calls
// with the adapters from them to a struct-taking kernel, and the calls
// through the dispatcher.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/OptionalArrayRef.h>

#include "entropy_math.h"

namespace hee {

using OptionalTensor = std::optional<at::Tensor>;

// How the dispatcher passes a schema's optional list: int[]? as
// OptionalIntArrayRef, float[]? as an optional ArrayRef.
template <typename T>
struct PassedListOf;
template <>
struct PassedListOf<int64_t> {
  using type = at::OptionalIntArrayRef;
};
template <>
struct PassedListOf<double> {
  using type = std::optional<at::ArrayRef<double>>;
};

// An optional list argument (int[]? or float[]?) held by value: the
// dispatcher passes a view of the caller's list, and the backward node keeps
// the hyper-parameters past the call.
template <typename T>
struct OptionalList {
  using Passed = typename PassedListOf<T>::type;

  std::optional<std::vector<T>> values;

  OptionalList() = default;
  OptionalList(const Passed& list) {
    if (list.has_value()) {
      values.emplace(list->begin(), list->end());
    }
  }
  operator Passed() const {
    if (!values.has_value()) {
      return std::nullopt;
    }
    return at::ArrayRef<T>(*values);
  }
  bool has_value() const {
    return values.has_value();
  }
};

} // namespace hee

#include "op_arguments.h"

namespace hee {

#define HEE_COUNT_ONE(...) +1
constexpr int kNumLossOutputs = 0 HEE_LOSS_COMPONENTS(HEE_COUNT_ONE);
constexpr int kNumForwardOutputs =
    kNumLossOutputs + (0 HEE_NONDIFFERENTIABLE_OUTPUTS(HEE_COUNT_ONE));
constexpr int kNumDifferentiableInputs =
    0 HEE_DIFFERENTIABLE_INPUTS(HEE_COUNT_ONE);
#undef HEE_COUNT_ONE

// The forward's outputs by name, as indices into its tuple.
enum ForwardOutput : std::size_t {
#define HEE_OUTPUT_INDEX(name) k_##name,
  HEE_LOSS_COMPONENTS(HEE_OUTPUT_INDEX)
  HEE_NONDIFFERENTIABLE_OUTPUTS(HEE_OUTPUT_INDEX)
#undef HEE_OUTPUT_INDEX
};

namespace detail {
template <std::size_t... I>
auto tensor_tuple(std::index_sequence<I...>)
    -> std::tuple<decltype((void)I, at::Tensor())...>;
} // namespace detail

// The forward's outputs: the loss components, then the per-row statistics
// kept for the backward, row_stats [3, H * B] (docs/design.md, "The row
// statistics"), and discrete_entropy_per_head ([H] with sub-heads, else [0]).
using LossForwardOutputs = decltype(detail::tensor_tuple(
    std::make_index_sequence<kNumForwardOutputs>()));

// One gradient per differentiable input; one that was not requested
// (output_mask) or whose input is absent is an empty [0] placeholder.
using LossBackwardOutputs = decltype(detail::tensor_tuple(
    std::make_index_sequence<kNumDifferentiableInputs>()));

// The scalar hyper-parameters, as the schema passes them.
struct LossHyperparameters {
#define HEE_HYPERPARAMETER_FIELD(kind, type, name, ...) \
  HEE_WHEN(kind, HYPERPARAMETER, type name{};)
  HEE_TRAILING_ARGUMENTS(HEE_HYPERPARAMETER_FIELD)
#undef HEE_HYPERPARAMETER_FIELD
};

// Positions of the arguments in the forward's schema and in the backward's
// (the backward's upstream gradients take the first kNumLossOutputs).
enum ForwardArgument : std::size_t {
#define HEE_INPUT_POSITION(type, name, ...) kForward_##name,
#define HEE_TRAILING_POSITION(kind, type, name, ...) kForward_##name,
  HEE_DIFFERENTIABLE_INPUTS(HEE_INPUT_POSITION)
  HEE_TRAILING_ARGUMENTS(HEE_TRAILING_POSITION)
  kNumForwardArguments
};
enum BackwardArgument : std::size_t {
  kBackward_last_upstream_grad = kNumLossOutputs - 1,
#define HEE_BACKWARD_INPUT_POSITION(type, name, ...) kBackward_##name,
#define HEE_BACKWARD_SAVED_POSITION(name, is_output) kBackward_##name,
#define HEE_BACKWARD_TRAILING_POSITION(kind, type, name, ...) kBackward_##name,
  HEE_DIFFERENTIABLE_INPUTS(HEE_BACKWARD_INPUT_POSITION)
  HEE_SAVED_OUTPUTS(HEE_BACKWARD_SAVED_POSITION)
  kBackward_output_mask,
  HEE_TRAILING_ARGUMENTS(HEE_BACKWARD_TRAILING_POSITION)
  kNumBackwardArguments
};
#undef HEE_INPUT_POSITION
#undef HEE_TRAILING_POSITION
#undef HEE_BACKWARD_INPUT_POSITION
#undef HEE_BACKWARD_SAVED_POSITION
#undef HEE_BACKWARD_TRAILING_POSITION

// The hyper-parameters as the math (entropy_math.h) reads them, on any
// device.
inline math::LossParams loss_params_of(const LossHyperparameters& h) {
  math::LossParams params;
  params.discrete_weight = h.discrete_entropy_weight;
  params.continuous_weight = h.continuous_entropy_weight;
  params.has_discrete_threshold = h.min_entropy_threshold.has_value();
  params.discrete_threshold = h.min_entropy_threshold.value_or(0.0);
  params.has_continuous_threshold =
      h.continuous_min_entropy_threshold.has_value();
  params.continuous_threshold =
      h.continuous_min_entropy_threshold.value_or(0.0);
  params.penalty_multiplier = h.penalty_multiplier;
  return params;
}

#define HEE_INPUT_REFERENCE_FIELD(type, name, ...) const type& name;
#define HEE_TRAILING_INPUT_REFERENCE_FIELD(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, const type& name;)
// From a tuple of the schema's arguments (t), by position.
#define HEE_FORWARD_INPUT_FROM(type, name, ...) std::get<kForward_##name>(t),
#define HEE_FORWARD_HYPERPARAMETER_FROM(kind, type, name, ...) \
  HEE_WHEN(kind, HYPERPARAMETER, std::get<kForward_##name>(t), )
#define HEE_FORWARD_TRAILING_INPUT_FROM(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, std::get<kForward_##name>(t), )
#define HEE_BACKWARD_INPUT_FROM(type, name, ...) std::get<kBackward_##name>(t),
#define HEE_BACKWARD_SAVED_FROM(name, is_output) std::get<kBackward_##name>(t),
#define HEE_BACKWARD_HYPERPARAMETER_FROM(kind, type, name, ...) \
  HEE_WHEN(kind, HYPERPARAMETER, std::get<kBackward_##name>(t), )
#define HEE_BACKWARD_TRAILING_INPUT_FROM(kind, type, name, ...) \
  HEE_WHEN(kind, INPUT, std::get<kBackward_##name>(t), )

// The forward op's arguments. The references live as long as the call.
struct LossForwardArgs {
  HEE_DIFFERENTIABLE_INPUTS(HEE_INPUT_REFERENCE_FIELD)
  LossHyperparameters hyperparameters;
  HEE_TRAILING_ARGUMENTS(HEE_TRAILING_INPUT_REFERENCE_FIELD)

  // From the schema's arguments, in order (references to them).
  template <typename Tuple>
  static LossForwardArgs from_schema_order(const Tuple& t) {
    return {
        HEE_DIFFERENTIABLE_INPUTS(HEE_FORWARD_INPUT_FROM)
        LossHyperparameters{
            HEE_TRAILING_ARGUMENTS(HEE_FORWARD_HYPERPARAMETER_FROM)},
        HEE_TRAILING_ARGUMENTS(HEE_FORWARD_TRAILING_INPUT_FROM)};
  }
  math::LossParams params() const {
    return loss_params_of(hyperparameters);
  }
  // The head that sets the device: logits when present, else log_std (the
  // checks reject a call with neither).
  const at::Tensor& head() const {
    return logits.has_value() ? *logits : *log_std;
  }
};

// The backward op's arguments: the upstream gradients of the loss
// components (absent where a component was not used), the forward's
// differentiable inputs, what the forward saved, the hyper-parameters, which
// input gradients to compute, and the forward's other inputs.
struct LossBackwardArgs {
  std::array<OptionalTensor, kNumLossOutputs> grads;
  HEE_DIFFERENTIABLE_INPUTS(HEE_INPUT_REFERENCE_FIELD)
#define HEE_SAVED_OUTPUT_REFERENCE_FIELD(name, is_output) \
  const at::Tensor& name;
  HEE_SAVED_OUTPUTS(HEE_SAVED_OUTPUT_REFERENCE_FIELD)
#undef HEE_SAVED_OUTPUT_REFERENCE_FIELD
  LossHyperparameters hyperparameters;
  std::array<bool, kNumDifferentiableInputs> output_mask;
  HEE_TRAILING_ARGUMENTS(HEE_TRAILING_INPUT_REFERENCE_FIELD)

  template <typename Tuple>
  static LossBackwardArgs from_schema_order(const Tuple& t) {
    return {
        upstream_grads(t, std::make_index_sequence<kNumLossOutputs>()),
        HEE_DIFFERENTIABLE_INPUTS(HEE_BACKWARD_INPUT_FROM)
        HEE_SAVED_OUTPUTS(HEE_BACKWARD_SAVED_FROM)
        LossHyperparameters{
            HEE_TRAILING_ARGUMENTS(HEE_BACKWARD_HYPERPARAMETER_FROM)},
        std::get<kBackward_output_mask>(t),
        HEE_TRAILING_ARGUMENTS(HEE_BACKWARD_TRAILING_INPUT_FROM)};
  }
  math::LossParams params() const {
    return loss_params_of(hyperparameters);
  }
  const at::Tensor& head() const {
    return logits.has_value() ? *logits : *log_std;
  }

 private:
  template <typename Tuple, std::size_t... I>
  static std::array<OptionalTensor, kNumLossOutputs> upstream_grads(
      const Tuple& t,
      std::index_sequence<I...>) {
    return {std::get<I>(t)...};
  }
};

#undef HEE_INPUT_REFERENCE_FIELD
#undef HEE_TRAILING_INPUT_REFERENCE_FIELD
#undef HEE_FORWARD_INPUT_FROM
#undef HEE_FORWARD_HYPERPARAMETER_FROM
#undef HEE_FORWARD_TRAILING_INPUT_FROM
#undef HEE_BACKWARD_INPUT_FROM
#undef HEE_BACKWARD_SAVED_FROM
#undef HEE_BACKWARD_HYPERPARAMETER_FROM
#undef HEE_BACKWARD_TRAILING_INPUT_FROM

// The schemas, for TORCH_LIBRARY (ops.cpp) and test-only libraries that
// register the same kernels under another namespace.
std::string loss_forward_schema(const std::string& name);
std::string loss_backward_schema(const std::string& name);

namespace detail {

template <typename... T>
struct TypeList {};

template <typename List>
struct DropFirst;
template <typename First, typename... Rest>
struct DropFirst<TypeList<First, Rest...>> {
  using type = TypeList<Rest...>;
};

// How the dispatcher passes an argument of the schema: tensors by const
// reference, scalars by value.
template <typename T>
struct Passed {
  using type = T;
};
template <>
struct Passed<at::Tensor> {
  using type = const at::Tensor&;
};
template <>
struct Passed<OptionalTensor> {
  using type = const OptionalTensor&;
};
template <typename T>
struct Passed<OptionalList<T>> {
  using type = typename OptionalList<T>::Passed;
};

template <typename Outputs, typename Args, typename Parameters>
struct KernelAdapter;

// Adapts a kernel that takes the argument struct to the unboxed signature
// of the schema: call<Kernel> takes the arguments one by one and builds the
// struct from them by position.
template <typename Outputs, typename Args, typename... Parameters>
struct KernelAdapter<Outputs, Args, TypeList<Parameters...>> {
  using Signature = Outputs(Parameters...);

  template <Outputs (*Kernel)(const Args&)>
  static Outputs call(Parameters... arguments) {
    return Kernel(Args::from_schema_order(std::forward_as_tuple(arguments...)));
  }
};

#define HEE_PASSED_INPUT(cpp_type, name, ...) \
  , typename ::hee::detail::Passed<cpp_type>::type
#define HEE_PASSED_TRAILING(kind, cpp_type, name, ...) \
  , typename ::hee::detail::Passed<cpp_type>::type
#define HEE_PASSED_UPSTREAM_GRAD(name) , const ::hee::OptionalTensor&
#define HEE_PASSED_SAVED_OUTPUT(name, is_output) , const ::at::Tensor&

// A leading void keeps every entry's comma in front of it; DropFirst removes
// it.
using ForwardParameters = typename DropFirst<TypeList<
    void HEE_DIFFERENTIABLE_INPUTS(HEE_PASSED_INPUT)
        HEE_TRAILING_ARGUMENTS(HEE_PASSED_TRAILING)>>::type;

using BackwardParameters = typename DropFirst<TypeList<
    void HEE_LOSS_COMPONENTS(HEE_PASSED_UPSTREAM_GRAD)
        HEE_DIFFERENTIABLE_INPUTS(HEE_PASSED_INPUT)
            HEE_SAVED_OUTPUTS(HEE_PASSED_SAVED_OUTPUT),
    std::array<bool, kNumDifferentiableInputs>
        HEE_TRAILING_ARGUMENTS(HEE_PASSED_TRAILING)>>::type;

template <typename List>
struct Length;
template <typename... T>
struct Length<TypeList<T...>> {
  static constexpr std::size_t value = sizeof...(T);
};
// The argument positions that from_schema_order reads cover the signatures.
static_assert(Length<ForwardParameters>::value == kNumForwardArguments);
static_assert(Length<BackwardParameters>::value == kNumBackwardArguments);

#undef HEE_PASSED_INPUT
#undef HEE_PASSED_TRAILING
#undef HEE_PASSED_UPSTREAM_GRAD
#undef HEE_PASSED_SAVED_OUTPUT

using ForwardAdapter =
    KernelAdapter<LossForwardOutputs, LossForwardArgs, ForwardParameters>;
using BackwardAdapter =
    KernelAdapter<LossBackwardOutputs, LossBackwardArgs, BackwardParameters>;

} // namespace detail

// The unboxed signatures of the schemas.
using LossForwardSignature = detail::ForwardAdapter::Signature;
using LossBackwardSignature = detail::BackwardAdapter::Signature;

using ForwardKernel = LossForwardOutputs (*)(const LossForwardArgs&);
using BackwardKernel = LossBackwardOutputs (*)(const LossBackwardArgs&);

// The dispatcher-facing kernel of a struct-taking kernel:
//   m.impl("hybrid_entropy_loss", forward_kernel<&my_forward>);
template <ForwardKernel Kernel>
constexpr auto forward_kernel =
    &detail::ForwardAdapter::template call<Kernel>;
template <BackwardKernel Kernel>
constexpr auto backward_kernel =
    &detail::BackwardAdapter::template call<Kernel>;

// Calls through the dispatcher (from the current dispatch key down).
LossForwardOutputs call_forward_op(const LossForwardArgs& args);
LossBackwardOutputs call_backward_op(const LossBackwardArgs& args);

} // namespace hee

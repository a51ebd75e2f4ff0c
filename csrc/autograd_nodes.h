// What the C++ autograd kernels of both ops share: making a backward node as
// the running torch holds its nodes, and optional tensors from a node's
// undefined ones.
#pragma once

#include <memory>
#include <optional>
#include <type_traits>

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

namespace hee {

// A new autograd node held as torch holds its nodes: by c10::intrusive_ptr
// where Node is an intrusive_ptr_target (torch 2.13 on), by std::shared_ptr
// before. Decided from the type, not the version number, so any torch whose
// Node is either builds.
template <typename NodeType>
auto make_node() {
  if constexpr (std::is_base_of_v<c10::intrusive_ptr_target, NodeType>) {
    return c10::make_intrusive<NodeType>();
  } else {
    return std::make_shared<NodeType>();
  }
}

inline std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

} // namespace hee

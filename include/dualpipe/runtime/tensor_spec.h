#pragma once
// dtype, shape and device of a tensor, as exchanged in p2p headers and declared by stages.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe::runtime {

struct TensorSpec {
  bool defined = true;  // false: the slot carries no tensor (e.g. no gradient for an int input)
  at::ScalarType dtype = at::kFloat;
  std::vector<std::int64_t> shape;
  // Where the tensor lives. A received tensor lives on the receiving channel's device (see
  // P2PChannel), so specs compare equal across ranks whose devices have different indices.
  at::Device device = at::kCPU;

  static TensorSpec of(const at::Tensor& tensor);
  // Options to allocate a tensor of this spec (dtype and device).
  at::TensorOptions options() const { return at::TensorOptions().dtype(dtype).device(device); }
  friend bool operator==(const TensorSpec& a, const TensorSpec& b) {
    return a.defined == b.defined &&
           (!a.defined || (a.dtype == b.dtype && a.shape == b.shape && a.device == b.device));
  }
  friend bool operator!=(const TensorSpec& a, const TensorSpec& b) { return !(a == b); }
};

// "float[3, 64, 256]" (CPU), "float[3, 64, 256]@cuda:0" or "undefined".
std::string to_string(const TensorSpec& spec);
// "[float[3, 64], long[3]]".
std::string to_string(const std::vector<TensorSpec>& specs);

}  // namespace dualpipe::runtime

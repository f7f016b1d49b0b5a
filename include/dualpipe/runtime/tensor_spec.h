#pragma once
// dtype and shape of a tensor, as exchanged in p2p headers and declared by stages.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe::runtime {

struct TensorSpec {
  bool defined = true;  // false: the slot carries no tensor (e.g. no gradient for an int input)
  at::ScalarType dtype = at::kFloat;
  std::vector<std::int64_t> shape;

  static TensorSpec of(const at::Tensor& tensor);
  friend bool operator==(const TensorSpec& a, const TensorSpec& b) {
    return a.defined == b.defined && (!a.defined || (a.dtype == b.dtype && a.shape == b.shape));
  }
  friend bool operator!=(const TensorSpec& a, const TensorSpec& b) { return !(a == b); }
};

// "float[3, 64, 256]" or "undefined".
std::string to_string(const TensorSpec& spec);
// "[float[3, 64], long[3]]".
std::string to_string(const std::vector<TensorSpec>& specs);

}  // namespace dualpipe::runtime

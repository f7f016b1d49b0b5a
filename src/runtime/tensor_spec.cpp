#include "dualpipe/runtime/tensor_spec.h"

namespace dualpipe::runtime {

TensorSpec TensorSpec::of(const at::Tensor& tensor) {
  TensorSpec spec;
  spec.defined = tensor.defined();
  if (spec.defined) {
    spec.dtype = tensor.scalar_type();
    spec.shape.assign(tensor.sizes().begin(), tensor.sizes().end());
    spec.device = tensor.device();
  }
  return spec;
}

std::string to_string(const TensorSpec& spec) {
  if (!spec.defined) return "undefined";
  std::string out = std::string(c10::toString(spec.dtype)) + "[";
  for (std::size_t i = 0; i < spec.shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(spec.shape[i]);
  }
  out += "]";
  if (spec.device != at::Device(at::kCPU)) out += "@" + spec.device.str();
  return out;
}

std::string to_string(const std::vector<TensorSpec>& specs) {
  std::string out = "[";
  for (std::size_t i = 0; i < specs.size(); ++i) out += (i ? ", " : "") + to_string(specs[i]);
  return out + "]";
}

}  // namespace dualpipe::runtime

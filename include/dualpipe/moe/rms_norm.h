#pragma once
// Root-mean-square layer normalisation (no mean subtraction, no bias).

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace dualpipe::moe {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t size, double eps);
  // x: [..., size]. Returns x / sqrt(mean(x^2) + eps) * weight, same shape.
  at::Tensor forward(const at::Tensor& x);

 private:
  double eps_;
  at::Tensor weight_;
};
TORCH_MODULE(RMSNorm);

}  // namespace dualpipe::moe

#pragma once
// A drop-in for torch::nn::Linear (same options, parameters and initialisation) whose backward
// can defer the weight gradient to a WeightGradStore: inside a DeferWeightGradGuard it returns
// the input gradient at once and pushes "grad_weight += grad_out^T x, grad_bias += sum grad_out"
// to the store; elsewhere it behaves exactly like torch::nn::Linear.

#include <torch/nn/cloneable.h>
#include <torch/nn/options/linear.h>
#include <torch/nn/pimpl.h>

namespace dualpipe::runtime {

class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features)
      : LinearImpl(torch::nn::LinearOptions(in_features, out_features)) {}
  explicit LinearImpl(const torch::nn::LinearOptions& options);

  void reset() override;
  // Same initialisation as torch::nn::Linear::reset_parameters (Kaiming-uniform weight, bias
  // uniform in +-1/sqrt(in_features)), consuming the generator in the same order.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  // x [..., in_features] -> [..., out_features].
  at::Tensor forward(const at::Tensor& input);

  torch::nn::LinearOptions options;
  at::Tensor weight;
  at::Tensor bias;
};

TORCH_MODULE(Linear);

}  // namespace dualpipe::runtime

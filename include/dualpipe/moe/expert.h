#pragma once
// One SwiGLU feed-forward expert: w2(silu(w1 x) * w3 x). The shared expert has the same form.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "dualpipe/moe/linear.h"

namespace dualpipe::moe {

class SwiGLUExpertImpl : public torch::nn::Module {
 public:
  SwiGLUExpertImpl(int64_t hidden_size, int64_t expert_hidden_size);
  // x: [tokens, hidden] (tokens may be 0). Returns [tokens, hidden].
  at::Tensor forward(const at::Tensor& x);

 private:
  Linear w1_{nullptr};
  Linear w2_{nullptr};
  Linear w3_{nullptr};
};
TORCH_MODULE(SwiGLUExpert);

}  // namespace dualpipe::moe

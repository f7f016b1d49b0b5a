#pragma once
// Causal multi-head self-attention (no bias, no dropout).

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "dualpipe/moe/linear.h"

namespace dualpipe::moe {

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(int64_t hidden_size, int64_t num_heads);
  // x: [batch, seq, hidden]. Token t attends to tokens 0..t of its own sequence.
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t num_heads_;
  Linear qkv_{nullptr};
  Linear out_{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

}  // namespace dualpipe::moe

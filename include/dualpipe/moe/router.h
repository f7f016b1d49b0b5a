#pragma once
// Top-k softmax gating over E experts (Mixtral form: top-k of the logits, softmax over the k).

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "dualpipe/moe/linear.h"

namespace dualpipe::moe {

struct Routing {
  at::Tensor expert_ids;  // [tokens, top_k] int64, the chosen experts of each token
  at::Tensor weights;     // [tokens, top_k] gate weights (sum to 1 per token), differentiable
};

class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(int64_t hidden_size, int64_t num_experts, int64_t top_k);
  // x: [tokens, hidden].
  Routing forward(const at::Tensor& x);

  // Test hook: a [tokens, num_experts] tensor added to the logits of every later call (a large
  // value forces a choice while the gate stays differentiable). An undefined tensor clears it.
  // NOTE: ties must be avoided by the caller: topk on equal logits picks an unspecified order.
  void set_logit_bias(at::Tensor bias) { logit_bias_ = std::move(bias); }

 private:
  int64_t top_k_;
  Linear gate_{nullptr};
  at::Tensor logit_bias_;
};
TORCH_MODULE(Router);

}  // namespace dualpipe::moe

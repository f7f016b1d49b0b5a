#include "dualpipe/moe/router.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace dualpipe::moe {

RouterImpl::RouterImpl(int64_t hidden_size, int64_t num_experts, int64_t top_k) : top_k_(top_k) {
  gate_ = register_module("gate", Linear(LinearOptions(hidden_size, num_experts).bias(false)));
}

Routing RouterImpl::forward(const at::Tensor& x) {
  at::Tensor logits = gate_->forward(x);
  if (logit_bias_.defined()) {
    if (logit_bias_.sizes() != logits.sizes()) {
      throw std::invalid_argument("Router logit bias has shape " + c10::str(logit_bias_.sizes()) +
                                  ", the logits have " + c10::str(logits.sizes()));
    }
    logits = logits + logit_bias_;
  }
  auto [top_logits, expert_ids] = logits.topk(top_k_, -1);
  return Routing{expert_ids, at::softmax(top_logits, -1)};
}

}  // namespace dualpipe::moe

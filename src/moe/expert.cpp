#include "dualpipe/moe/expert.h"

#include <ATen/ATen.h>

namespace dualpipe::moe {

SwiGLUExpertImpl::SwiGLUExpertImpl(int64_t hidden_size, int64_t expert_hidden_size) {
  w1_ = register_module("w1", Linear(LinearOptions(hidden_size, expert_hidden_size).bias(false)));
  w2_ = register_module("w2", Linear(LinearOptions(expert_hidden_size, hidden_size).bias(false)));
  w3_ = register_module("w3", Linear(LinearOptions(hidden_size, expert_hidden_size).bias(false)));
}

at::Tensor SwiGLUExpertImpl::forward(const at::Tensor& x) {
  return w2_->forward(at::silu(w1_->forward(x)) * w3_->forward(x));
}

}  // namespace dualpipe::moe

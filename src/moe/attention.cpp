#include "dualpipe/moe/attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace dualpipe::moe {

CausalSelfAttentionImpl::CausalSelfAttentionImpl(int64_t hidden_size, int64_t num_heads)
    : num_heads_(num_heads) {
  qkv_ = register_module("qkv", Linear(LinearOptions(hidden_size, 3 * hidden_size).bias(false)));
  out_ = register_module("out", Linear(LinearOptions(hidden_size, hidden_size).bias(false)));
}

at::Tensor CausalSelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0), seq = x.size(1), hidden = x.size(2);
  const int64_t head_dim = hidden / num_heads_;
  // [batch, seq, 3, heads, head_dim] -> three [batch, heads, seq, head_dim]
  std::vector<at::Tensor> qkv = qkv_->forward(x)
                                    .view({batch, seq, 3, num_heads_, head_dim})
                                    .permute({2, 0, 3, 1, 4})
                                    .unbind(0);
  at::Tensor scores = at::matmul(qkv[0], qkv[1].transpose(-2, -1)) / std::sqrt(double(head_dim));
  at::Tensor future = at::ones({seq, seq}, x.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  at::Tensor context = at::matmul(at::softmax(scores, -1), qkv[2]);
  return out_->forward(context.transpose(1, 2).reshape({batch, seq, hidden}));
}

}  // namespace dualpipe::moe

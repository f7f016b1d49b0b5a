#include "dualpipe/moe/rms_norm.h"

#include <ATen/ATen.h>

namespace dualpipe::moe {

RMSNormImpl::RMSNormImpl(int64_t size, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", at::ones({size}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor scale = at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return x * scale * weight_;
}

}  // namespace dualpipe::moe

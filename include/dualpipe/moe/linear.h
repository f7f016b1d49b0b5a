#pragma once
// The projection layer every moe module uses.

#include <torch/nn/modules/linear.h>

namespace dualpipe::moe {

// NOTE: one-line switch to dualpipe::runtime::Linear (same options, weight gradient deferrable to
// the executor's W queue and to the FB hook's mlp(W)/attn(W) points). Not switched yet: in
// LibTorch 1.13 runtime::Linear with bias(false) fails ("tensor does not have a device": a custom
// autograd Function cannot take the undefined bias), and every projection here has no bias.
using Linear = torch::nn::Linear;
using LinearOptions = torch::nn::LinearOptions;

}  // namespace dualpipe::moe

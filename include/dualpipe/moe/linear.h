#pragma once
// The projection layer every moe module uses: dualpipe::runtime::Linear (the options, parameters
// and initialisation of torch::nn::Linear), whose weight gradient goes to the executor's W queue
// inside a deferral guard and to the FB hook's mlp(W)/attn(W) points, so the zero-bubble
// schedules' W ops carry the model's weight-gradient work.

#include <torch/nn/options/linear.h>

#include "dualpipe/runtime/linear.h"

namespace dualpipe::moe {

using Linear = runtime::Linear;
using LinearOptions = torch::nn::LinearOptions;

}  // namespace dualpipe::moe

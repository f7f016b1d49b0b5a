#pragma once
// The projection layer every moe module uses.

#include <torch/nn/modules/linear.h>

namespace dualpipe::moe {

// NOTE: one-line switch: this becomes dualpipe::runtime::Linear (same options, weight gradient
// deferred to the executor's W queue) once the runtime provides it.
using Linear = torch::nn::Linear;
using LinearOptions = torch::nn::LinearOptions;

}  // namespace dualpipe::moe

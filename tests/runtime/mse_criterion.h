#pragma once
// Test criterion shared by the runtime tests: the mean squared error of a stage's first output
// against the micro-batch's first label.

#include <torch/torch.h>

#include "dualpipe/runtime/stage_module.h"

namespace dualpipe::runtime::testing {

// A Criterion (see stage_module.h): a scalar loss per micro-batch.
inline at::Tensor mse(const TensorList& outputs, const TensorList& labels) {
  return torch::mse_loss(outputs.at(0), labels.at(0));
}

}  // namespace dualpipe::runtime::testing

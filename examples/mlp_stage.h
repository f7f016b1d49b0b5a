#pragma once
// What both examples train: a residual MLP block, x + fc2(gelu(fc1(x))), as the stage module, on
// a toy regression task.
//
// A pipeline stage is a StageModule: forward() maps the tensors received from the previous
// stage to the tensors sent to the next one. The layers are dualpipe::runtime::Linear, a
// drop-in for torch::nn::Linear whose weight gradients the zero-bubble schedules defer to their
// W ops; with torch::nn::Linear the same code still trains, with the W work done in B.

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>

#include <memory>
#include <utility>

#include "dualpipe/runtime/linear.h"
#include "dualpipe/runtime/stage_module.h"

namespace examples {

using dualpipe::runtime::MicrobatchId;
using dualpipe::runtime::TensorList;

class MlpStage : public dualpipe::runtime::StageModule {
 public:
  explicit MlpStage(int64_t hidden) {
    fc1_ = register_module("fc1", dualpipe::runtime::Linear(hidden, 4 * hidden));
    fc2_ = register_module("fc2", dualpipe::runtime::Linear(4 * hidden, hidden));
  }

  TensorList forward(const MicrobatchId& /*id*/, const TensorList& inputs) override {
    const at::Tensor& x = inputs.at(0);
    return {x + fc2_(torch::nn::functional::gelu(fc1_(x)))};
  }

 private:
  dualpipe::runtime::Linear fc1_{nullptr};
  dualpipe::runtime::Linear fc2_{nullptr};
};

// Model stage `stage`, seeded by its number: DualPipe's two copies of a stage (on ranks r and
// R-1-r) start from the same weights without any communication.
inline std::shared_ptr<MlpStage> make_stage(int stage, int64_t hidden) {
  torch::manual_seed(1000 + stage);
  return std::make_shared<MlpStage>(hidden);
}

// Step `step`'s global batch of the task y = sin(x): `rows` rows of N(0, 1) drawn from seed `step`,
// so every rank draws the same batch without communicating.
inline std::pair<at::Tensor, at::Tensor> regression_batch(int step, int64_t rows, int64_t hidden) {
  torch::manual_seed(step);
  at::Tensor x = at::randn({rows, hidden});
  return {x, at::sin(x)};
}

// One loss per micro-batch, scaled by 1/num_microbatches: the step's gradients are those of the
// mean over the batch.
inline dualpipe::runtime::Criterion mse_criterion(int num_microbatches) {
  return [num_microbatches](const TensorList& outputs, const TensorList& labels) {
    return torch::nn::functional::mse_loss(outputs[0], labels[0]) / num_microbatches;
  };
}

}  // namespace examples

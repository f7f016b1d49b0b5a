#pragma once
// The stage module both examples train: a residual MLP block, x + fc2(gelu(fc1(x))).
//
// A pipeline stage is a StageModule: forward() maps the tensors received from the previous
// stage to the tensors sent to the next one. The layers are dualpipe::runtime::Linear, a
// drop-in for torch::nn::Linear whose weight gradients the zero-bubble schedules defer to their
// W ops; with torch::nn::Linear the same code still trains, with the W work done in B.

#include <torch/nn/functional/activation.h>

#include <memory>

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

}  // namespace examples

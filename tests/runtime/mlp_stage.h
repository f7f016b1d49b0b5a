#pragma once
// Test model: Linear-GELU-Linear stages built from the library Linear (so W ops have work).

#include <torch/torch.h>

#include <memory>

#include "dualpipe/runtime/linear.h"
#include "dualpipe/runtime/stage_module.h"

namespace dualpipe::runtime::testing {

inline constexpr int kHidden = 64;
inline constexpr int kFfn = 128;

class MlpStage : public StageModule {
 public:
  MlpStage() {
    fc1_ = register_module("fc1", Linear(kHidden, kFfn));
    fc2_ = register_module("fc2", Linear(kFfn, kHidden));
  }
  TensorList forward(const MicrobatchId& id, const TensorList& inputs) override {
    return {fc2_(torch::gelu(fc1_(inputs.at(0))))};
  }

 private:
  Linear fc1_{nullptr};
  Linear fc2_{nullptr};
};

// Stage `model_stage` with fixed weights: every copy of a model stage is identical.
inline std::shared_ptr<MlpStage> make_mlp_stage(int model_stage) {
  torch::manual_seed(1000 + model_stage);
  return std::make_shared<MlpStage>();
}

}  // namespace dualpipe::runtime::testing

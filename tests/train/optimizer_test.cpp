#include "dualpipe/train/optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace dualpipe::train {
namespace {

TEST(AdamW, FirstStepMovesByLearningRateAgainstTheGradientSign) {
  at::Tensor p = at::tensor({1.0f, -2.0f, 3.0f}).requires_grad_();
  p.mutable_grad() = at::tensor({0.5f, -4.0f, 0.0f});
  AdamW opt({"p"}, {p});
  opt.step(0.1);
  // Bias-corrected first step: m/sqrt(v) = sign(g).
  EXPECT_NEAR(p[0].item<float>(), 0.9f, 1e-5);
  EXPECT_NEAR(p[1].item<float>(), -1.9f, 1e-5);
  EXPECT_NEAR(p[2].item<float>(), 3.0f, 1e-6);
}

TEST(AdamW, SavedStateResumesBitForBit) {
  auto run = [](AdamW& opt, at::Tensor& p, int steps, int first) {
    for (int s = 0; s < steps; ++s) {
      p.mutable_grad() = at::sin(p.detach() * (first + s));
      opt.step(0.01);
    }
  };
  at::Tensor a = at::arange(6, at::kFloat).requires_grad_();
  AdamW opt_a({"a"}, {a});
  run(opt_a, a, 3, 0);
  NamedTensors state;
  opt_a.save_state(state, "opt.");
  const at::Tensor saved_a = a.detach().clone();
  run(opt_a, a, 4, 3);

  at::Tensor b = saved_a.clone().requires_grad_();
  AdamW opt_b({"a"}, {b});
  opt_b.load_state(state, "opt.");
  EXPECT_EQ(opt_b.num_steps(), 3);
  run(opt_b, b, 4, 3);
  EXPECT_TRUE(at::equal(a, b));
  NamedTensors empty;
  EXPECT_THROW(opt_b.load_state(empty, "opt."), std::invalid_argument);
}

TEST(LearningRate, WarmsUpThenDecaysToATenth) {
  EXPECT_DOUBLE_EQ(learning_rate_at(5, 100, 10, 1.0), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate_at(10, 100, 10, 1.0), 1.0);
  EXPECT_NEAR(learning_rate_at(100, 100, 10, 1.0), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate_at(1, 10, 0, 2.0),
                   2.0 * (0.1 + 0.45 * (1 + std::cos(M_PI * 0.1))));
}

}  // namespace
}  // namespace dualpipe::train

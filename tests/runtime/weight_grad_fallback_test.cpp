// Generic fallback: a stage whose layers cannot defer their weight gradients (plain
// torch::nn::Linear) still trains correctly under the zero-bubble schedules. Its weight
// gradients are computed in B (the W ops find nothing queued), so the losses equal a
// single-process reference bit for bit and the gradients match it.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/schedule/registry.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

using testing::mse;

constexpr int kHidden = 16;

class PlainLinearStage : public StageModule {
 public:
  PlainLinearStage() { fc_ = register_module("fc", torch::nn::Linear(kHidden, kHidden)); }
  TensorList forward(const MicrobatchId&, const TensorList& inputs) override {
    return {torch::tanh(fc_(inputs.at(0)))};
  }

 private:
  torch::nn::Linear fc_{nullptr};
};

std::shared_ptr<PlainLinearStage> make_stage(int stage) {
  torch::manual_seed(500 + stage);
  return std::make_shared<PlainLinearStage>();
}

class WeightGradFallbackTest : public ::testing::TestWithParam<std::string> {};

TEST_P(WeightGradFallbackTest, NonDeferringLayersComputeWeightGradientsInB) {
  const std::string schedule = GetParam();
  constexpr int kRanks = 2, kMicrobatches = 4, kRows = 2;
  torch::manual_seed(3);
  const at::Tensor x = torch::randn({kMicrobatches * kRows, kHidden});
  const at::Tensor y = torch::randn({kMicrobatches * kRows, kHidden});
  const int num_stages = schedule::schedule_placement(schedule, kRanks).num_stages();
  std::vector<std::shared_ptr<PlainLinearStage>> ref;
  for (int s = 0; s < num_stages; ++s) ref.push_back(make_stage(s));
  std::vector<at::Tensor> ref_losses;
  auto xs = x.split(kRows), ys = y.split(kRows);
  for (int m = 0; m < kMicrobatches; ++m) {
    TensorList h = {xs[m]};
    for (auto& stage : ref) h = stage->forward({}, h);
    at::Tensor loss = mse(h, {ys[m]});
    loss.backward();
    ref_losses.push_back(loss.detach());
  }

  std::vector<std::vector<StagePtr>> modules(kRanks);
  for (int rank = 0; rank < kRanks; ++rank) {
    for (const schedule::StageId& id : Pipeline::stages_for(schedule, kRanks, rank)) {
      modules[rank].push_back(make_stage(id.stage));
    }
  }
  std::vector<at::Tensor> losses(kRanks);
  std::vector<std::vector<int>> loss_microbatches(kRanks);
  std::vector<int> w_ops(kRanks, 0);
  auto errors = testing::run_ranks(kRanks, [&](int rank, CommunicatorPtr comm) {
    PipelineOptions options;
    options.trace = true;
    Pipeline pipeline(schedule, modules[rank], comm, options);
    const LocalBatch batch = local_batch(schedule, kRanks, rank, kMicrobatches, {x}, {y});
    losses[rank] = pipeline.step(batch.inputs, kMicrobatches, mse, batch.labels).loss;
    loss_microbatches[rank] = batch.loss_microbatches;
    for (const TraceEvent& event : pipeline.executor().trace().events()) {
      w_ops[rank] += event.name.rfind("W ", 0) == 0;
    }
  });
  for (auto& e : errors) ASSERT_EQ(e, nullptr) << testing::message_of(e);
  int compared = 0;
  for (int rank = 0; rank < kRanks; ++rank) {
    EXPECT_GT(w_ops[rank], 0) << schedule << " rank " << rank << ": the schedule has W ops";
    for (std::size_t i = 0; i < loss_microbatches[rank].size(); ++i) {
      EXPECT_TRUE(torch::equal(losses[rank][i], ref_losses[loss_microbatches[rank][i]]))
          << schedule << " micro-batch " << loss_microbatches[rank][i];
      ++compared;
    }
    for (std::size_t slot = 0; slot < modules[rank].size(); ++slot) {
      const int stage = Pipeline::stages_for(schedule, kRanks, rank)[slot].stage;
      auto theirs = ref[stage]->named_parameters();
      for (auto& p : modules[rank][slot]->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << schedule << " " << p.key();
        EXPECT_TRUE(torch::allclose(p.value().grad(), theirs[p.key()].grad(), 1e-5, 1e-7))
            << schedule << " rank " << rank << " " << p.key();
      }
    }
  }
  EXPECT_EQ(compared, kMicrobatches);
}

INSTANTIATE_TEST_SUITE_P(ZeroBubbleSchedules, WeightGradFallbackTest,
                         ::testing::Values("zb1p", "dualpipe", "dualpipev", "zbv", "v-half",
                                           "v-min"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');  // gtest names
                           return name;
                         });

}  // namespace
}  // namespace dualpipe::runtime

// Bad input and failing peers: clear errors, nothing hangs.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>

#include "dualpipe/runtime/pipeline.h"
#include "mlp_stage.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

using testing::make_mlp_stage;
using testing::mse;

// A stage that declares inputs of a width its predecessor does not produce.
class DeclaringStage : public testing::MlpStage {
 public:
  std::vector<TensorSpec> expected_inputs() const override {
    return {TensorSpec{true, at::kFloat, {2, 4, 32}}};
  }
};

TEST(FaultTest, ShapeMismatchNamesBothStages) {
  const at::Tensor x = torch::randn({4, 4, testing::kHidden});
  std::vector<StagePtr> modules = {make_mlp_stage(0), std::make_shared<DeclaringStage>()};
  auto errors = testing::run_ranks(
      2,
      [&](int rank, CommunicatorPtr comm) {
        Pipeline pipeline("1f1b", {modules[rank]}, comm,
                          PipelineOptions{{}, {}, std::chrono::seconds(3)});
        pipeline.step(rank == 0 ? TensorList{x} : TensorList{}, 2, mse,
                      rank == 1 ? TensorList{x} : TensorList{});
      },
      std::chrono::seconds(3));
  const std::string message = testing::message_of(errors[1]);
  EXPECT_NE(message.find("stage (d=0, s=0) on rank 0"), std::string::npos) << message;
  EXPECT_NE(message.find("stage (d=0, s=1) on rank 1"), std::string::npos) << message;
  EXPECT_NE(message.find("Float[2, 4, 64]"), std::string::npos) << message;
  EXPECT_NE(message.find("Float[2, 4, 32]"), std::string::npos) << message;
  // The sender is left waiting for a gradient that never comes: it fails too, within timeout.
  EXPECT_NE(errors[0], nullptr);
}

TEST(FaultTest, StoppedRankIsNamedWithinTimeout) {
  const at::Tensor x = torch::randn({8, 4, testing::kHidden});
  std::vector<StagePtr> modules = {make_mlp_stage(0), make_mlp_stage(1), make_mlp_stage(2)};
  // "Within timeout": the waits give up after the 3 s communicator timeout instead of hanging;
  // ctest's per-test TIMEOUT catches a hang, so no wall-clock time is asserted here.
  auto errors = testing::run_ranks(
      3,
      [&](int rank, CommunicatorPtr comm) {
        if (rank == 1) return;  // stops participating; its communicator goes away
        Pipeline pipeline("1f1b", {modules[rank]}, comm,
                          PipelineOptions{{}, {}, std::chrono::seconds(3)});
        pipeline.step(rank == 0 ? TensorList{x} : TensorList{}, 4, mse,
                      rank == 2 ? TensorList{x} : TensorList{});
      },
      std::chrono::seconds(3));
  for (int rank : {0, 2}) {
    const std::string message = testing::message_of(errors[rank]);
    EXPECT_NE(message.find("rank " + std::to_string(rank)), std::string::npos) << message;
    EXPECT_NE(message.find(" rank 1 "), std::string::npos) << message;
  }
  EXPECT_EQ(errors[1], nullptr);
}

TEST(FaultTest, ArgumentErrorsBeforeCommunication) {
  // `everywhere`: the error is visible to every rank (schedule sizes); otherwise only the ranks
  // holding the data can see it and the others fail on the lost peer.
  auto expect_invalid = [](int ranks, const std::string& name, int microbatches, int batch,
                           bool give_inputs, const std::string& needle, bool everywhere) {
    std::vector<std::string> messages(ranks);
    auto errors = testing::run_ranks(ranks, [&](int rank, CommunicatorPtr comm) {
      std::vector<StagePtr> modules = {make_mlp_stage(rank)};
      if (name == "dualpipe" || name == "dualpipev") modules.push_back(make_mlp_stage(rank));
      Pipeline pipeline(name, modules, comm, PipelineOptions{{}, {}, std::chrono::seconds(3)});
      const at::Tensor x = torch::randn({batch, testing::kHidden});
      try {
        pipeline.step(give_inputs ? TensorList{x} : TensorList{}, microbatches, mse, {x});
      } catch (const std::invalid_argument& e) {
        messages[rank] = e.what();
      }
    });
    for (int rank = 0; rank < ranks; ++rank) {
      if (everywhere || rank == 0) {
        EXPECT_EQ(errors[rank], nullptr) << testing::message_of(errors[rank]);
        EXPECT_NE(messages[rank].find(needle), std::string::npos) << messages[rank];
      } else {
        // Its own argument error or the lost peer: either way it does not hang.
        EXPECT_TRUE(!messages[rank].empty() ||
                    testing::message_of(errors[rank]).find("rank 0") != std::string::npos);
      }
    }
  };
  expect_invalid(3, "dualpipe", 6, 6, true, "even", true);
  expect_invalid(2, "dualpipe", 2, 4, true, "num_microbatches", true);
  expect_invalid(2, "1f1b", 4, 6, true, "does not split into 4", false);
  expect_invalid(2, "1f1b", 4, 8, false, "needs inputs", false);
}

}  // namespace
}  // namespace dualpipe::runtime

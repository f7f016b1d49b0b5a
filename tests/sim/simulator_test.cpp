#include "dualpipe/sim/simulator.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <tuple>

namespace dualpipe::sim {
namespace {

using schedule::Op;
using schedule::Placement;
using schedule::Schedule;

// Two ranks, one micro-batch, written by hand so the expected times can be worked out on paper.
Schedule two_rank_one_microbatch() {
  Schedule s;
  s.name = "hand";
  s.num_microbatches = 1;
  s.placement = Placement::round_robin(2, 2);
  s.programs = {
      {Op::forward(0, 0, 0), Op::send_activation(0, 0, 0, 1), Op::recv_grad(0, 1, 0, 1),
       Op::backward(0, 0, 0)},
      {Op::recv_activation(0, 0, 0, 0), Op::forward(0, 1, 0), Op::backward(0, 1, 0),
       Op::send_grad(0, 1, 0, 0)},
  };
  return s;
}

TEST(Simulator, HandWrittenTimesIncludeCommLatency) {
  CostModel costs;
  costs.forward = 1;
  costs.backward = 2;
  costs.comm = 0.5;
  SimResult result = simulate(two_rank_one_microbatch(), costs);
  // rank 0: F [0,1]; rank 1: F [1.5,2.5], B [2.5,4.5]; rank 0: B [5,7].
  ASSERT_EQ(result.ranks.size(), 2u);
  ASSERT_EQ(result.ranks[0].timeline.size(), 2u);
  ASSERT_EQ(result.ranks[1].timeline.size(), 2u);
  EXPECT_DOUBLE_EQ(result.ranks[0].timeline[0].start, 0);
  EXPECT_DOUBLE_EQ(result.ranks[1].timeline[0].start, 1.5);
  EXPECT_DOUBLE_EQ(result.ranks[1].timeline[1].end, 4.5);
  EXPECT_EQ(result.ranks[0].timeline[1].op_index, 3);
  EXPECT_DOUBLE_EQ(result.ranks[0].timeline[1].start, 5);
  EXPECT_DOUBLE_EQ(result.makespan, 7);
  EXPECT_DOUBLE_EQ(result.ranks[0].busy, 3);
  EXPECT_DOUBLE_EQ(result.ranks[0].bubble, 4);
  EXPECT_DOUBLE_EQ(result.ranks[1].bubble, 4);
  EXPECT_EQ(result.ranks[0].peak_activations, 1);
  EXPECT_EQ(result.ranks[0].parameter_copies, 1);
}

TEST(Simulator, LateSendDelaysTheConsumer) {
  // Rank 0 posts its send only after an unrelated second forward: the peer waits for it.
  Schedule s;
  s.name = "late-send";
  s.num_microbatches = 2;
  s.placement = Placement::round_robin(2, 2);
  s.programs = {
      {Op::forward(0, 0, 0), Op::forward(0, 0, 1), Op::send_activation(0, 0, 0, 1),
       Op::send_activation(0, 0, 1, 1)},
      {Op::recv_activation(0, 0, 0, 0), Op::recv_activation(0, 0, 1, 0), Op::forward(0, 1, 0),
       Op::forward(0, 1, 1)},
  };
  CostModel costs;
  SimResult result = simulate(s, costs);
  EXPECT_DOUBLE_EQ(result.ranks[1].timeline[0].start, 2);
  EXPECT_EQ(result.ranks[0].peak_activations, 2);
}

TEST(Simulator, StageMultipliersScaleComputeOfThatStage) {
  CostModel costs;
  costs.stage_scale = {1.0, 3.0};
  SimResult result = simulate(two_rank_one_microbatch(), costs);
  EXPECT_DOUBLE_EQ(result.ranks[1].busy, 9);  // (F + B) * 3
  EXPECT_DOUBLE_EQ(result.ranks[0].busy, 3);
  costs.stage_scale = {1.0};
  EXPECT_THROW(simulate(two_rank_one_microbatch(), costs), std::invalid_argument);
}

TEST(Simulator, DeadlockNamesTheBlockedRank) {
  Schedule s = two_rank_one_microbatch();
  s.programs[1].pop_back();  // the gradient is never sent
  try {
    simulate(s, CostModel{});
    FAIL() << "expected a deadlock";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("deadlocks"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 0, op 3"), std::string::npos) << what;
  }
}

TEST(Simulator, RejectsOpsOutOfRangeOrOnTheWrongRank) {
  Schedule s = two_rank_one_microbatch();
  s.programs[0][0] = Op::forward(0, 0, 7);
  EXPECT_THROW(simulate(s, CostModel{}), std::invalid_argument);
  s = two_rank_one_microbatch();
  s.programs[0][0] = Op::forward(0, 1, 0);
  EXPECT_THROW(simulate(s, CostModel{}), std::invalid_argument);
}

TEST(Simulator, DeferredBackwardCostsBMinusW) {
  Schedule s = two_rank_one_microbatch();
  s.programs[0][3] = Op::backward(0, 0, 0, /*defer_weight_grad=*/true);
  s.programs[0].push_back(Op::weight(0, 0, 0));
  CostModel costs;
  costs.backward = 3;
  costs.weight = 1;
  SimResult result = simulate(s, costs);
  const auto& timeline = result.ranks[0].timeline;
  ASSERT_EQ(timeline.size(), 3u);
  EXPECT_DOUBLE_EQ(timeline[1].end - timeline[1].start, 2);
  EXPECT_DOUBLE_EQ(timeline[2].end - timeline[2].start, 1);
  EXPECT_DOUBLE_EQ(result.ranks[0].busy, 4);
}

TEST(Simulator, ForwardBackwardPairCostsFbAndKeepsTheActivationCount) {
  Schedule s;
  s.name = "one-rank-fb";
  s.num_microbatches = 2;
  s.placement = Placement::bidirectional(1);
  s.programs = {
      {Op::forward(0, 0, 0), Op::forward_backward(1, 0, 0, 0, 0, 0), Op::backward(1, 0, 0)}};
  CostModel costs;
  costs.forward_backward = 2.5;
  SimResult result = simulate(s, costs);
  ASSERT_EQ(result.ranks[0].timeline.size(), 3u);
  EXPECT_DOUBLE_EQ(result.ranks[0].timeline[1].start, 1);
  EXPECT_DOUBLE_EQ(result.ranks[0].timeline[1].end, 3.5);
  EXPECT_DOUBLE_EQ(result.makespan, 5.5);
  EXPECT_EQ(result.ranks[0].peak_activations, 1);
  EXPECT_EQ(result.ranks[0].parameter_copies, 2);
}

}  // namespace
}  // namespace dualpipe::sim

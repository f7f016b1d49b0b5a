// The bubble and memory facts of the DualPipe paper, held against our builders' schedules and
// the simulator together, over many sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

#include "dualpipe/schedule/one_f_one_b.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/schedule/zero_bubble.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {
namespace {

using schedule::Schedule;

// (ranks, microbatches)
class OneFOneB : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(OneFOneB, BubbleIsPpMinusOneTimesFPlusBOnEveryRank) {
  auto [ranks, microbatches] = GetParam();
  Schedule s = schedule::build_1f1b(ranks, microbatches);
  for (auto [f, b] : {std::pair{1.0, 2.0}, std::pair{1.5, 2.5}}) {
    CostModel costs;
    costs.forward = f;
    costs.backward = b;
    costs.weight = 0.5;
    SimResult result = simulate(s, costs);
    for (int r = 0; r < ranks; ++r) {
      EXPECT_DOUBLE_EQ(result.ranks[r].bubble, (ranks - 1) * (f + b)) << "rank " << r;
      EXPECT_DOUBLE_EQ(result.ranks[r].busy, microbatches * (f + b)) << "rank " << r;
    }
  }
  SimResult result = simulate(s, CostModel{});
  EXPECT_EQ(result.ranks[0].peak_activations, std::min(ranks, microbatches));
  EXPECT_EQ(result.max_peak_activations(), std::min(ranks, microbatches));
  EXPECT_EQ(result.max_parameter_copies(), 1);
}

INSTANTIATE_TEST_SUITE_P(Sizes, OneFOneB,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7, 8, 16),
                                            ::testing::Values(1, 4, 8, 17, 32)));

class ZeroBubble1P : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(ZeroBubble1P, BubbleIsPpMinusOneTimesFPlusBMinus2W) {
  auto [ranks, microbatches] = GetParam();
  Schedule s = schedule::build_zb1p(ranks, microbatches);
  CostModel costs;  // F = B - W = W = 1
  SimResult result = simulate(s, costs);
  double expected = (ranks - 1) * (costs.forward + costs.backward - 2 * costs.weight);
  for (int r = 0; r < ranks; ++r) {
    EXPECT_DOUBLE_EQ(result.ranks[r].bubble, expected) << "rank " << r;
  }
  EXPECT_EQ(result.max_peak_activations(), ranks);
  EXPECT_EQ(result.ranks[0].peak_activations, ranks);
}

INSTANTIATE_TEST_SUITE_P(Sizes, ZeroBubble1P,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7, 8, 16),
                                            ::testing::Values(16, 17, 32)));

// (ranks, microbatches): DualPipe needs an even number of ranks and an even number of
// micro-batches >= 2 * ranks.
class DualPipeFacts : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(DualPipeFacts, EveryRankIdlesExactlyThePaperBubble) {
  auto [ranks, microbatches] = GetParam();
  Schedule s = schedule::build_schedule("dualpipe", ranks, microbatches);
  schedule::validate(s);
  CostModel costs;  // F=1, B=2, W=1, FB=3, comm=0
  SimResult result = simulate(s, costs);
  double expected = (ranks / 2 - 1) * (costs.forward_backward + costs.backward - 3 * costs.weight);
  for (int r = 0; r < ranks; ++r) {
    EXPECT_DOUBLE_EQ(result.ranks[r].bubble, expected) << "rank " << r;
    EXPECT_EQ(result.ranks[r].parameter_copies, 2);
  }
}

TEST_P(DualPipeFacts, NoRankIdlesMoreWhenTheOverlapSaves) {
  auto [ranks, microbatches] = GetParam();
  Schedule s = schedule::build_schedule("dualpipe", ranks, microbatches);
  for (double fb : {2.0, 2.5, 2.9}) {
    CostModel costs;
    costs.forward_backward = fb;
    SimResult result = simulate(s, costs);
    double bound = (ranks / 2 - 1) * (fb + costs.backward - 3 * costs.weight);
    for (int r = 0; r < ranks; ++r) {
      EXPECT_LE(result.ranks[r].bubble, bound + 1e-9) << "rank " << r << " FB=" << fb;
    }
  }
}

TEST_P(DualPipeFacts, PeakActivationsArePpPlusOneOnTheMiddleRanks) {
  auto [ranks, microbatches] = GetParam();
  SimResult result = simulate(schedule::build_schedule("dualpipe", ranks, microbatches), {});
  for (int r = 0; r < ranks; ++r) {
    bool middle = r == ranks / 2 - 1 || r == ranks / 2;
    EXPECT_EQ(result.ranks[r].peak_activations, middle ? ranks + 1 : ranks) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, DualPipeFacts,
                         ::testing::Values(std::tuple{2, 4}, std::tuple{2, 10}, std::tuple{4, 8},
                                           std::tuple{4, 10}, std::tuple{4, 20}, std::tuple{6, 12},
                                           std::tuple{6, 14}, std::tuple{8, 16}, std::tuple{8, 20},
                                           std::tuple{8, 34}, std::tuple{10, 24},
                                           std::tuple{16, 32}, std::tuple{16, 50},
                                           std::tuple{32, 64}, std::tuple{32, 100}));

// (ranks, micro-batches beyond the minimum 2 * ranks)
class DualPipeVFacts : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(DualPipeVFacts, BubbleAndPeakActivationsOfTwoRanksStages) {
  auto [ranks, extra] = GetParam();
  Schedule s = schedule::build_schedule("dualpipev", ranks, 2 * ranks + extra);
  schedule::validate(s);
  SimResult result = simulate(s, {});
  // The DualPipe paper's bubble with PP = 2 * ranks stages, on every rank.
  double expected = (ranks - 1) * (3.0 + 2.0 - 3 * 1.0);
  for (int r = 0; r < ranks; ++r) {
    EXPECT_DOUBLE_EQ(result.ranks[r].bubble, expected) << "rank " << r;
    EXPECT_EQ(result.ranks[r].peak_activations, r == ranks - 1 ? 2 * ranks + 1 : 2 * ranks)
        << "rank " << r;
  }
  EXPECT_EQ(result.max_parameter_copies(), 2);
}

INSTANTIATE_TEST_SUITE_P(Sizes, DualPipeVFacts,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7, 8, 16),
                                            ::testing::Values(0, 1, 5)));

}  // namespace
}  // namespace dualpipe::sim

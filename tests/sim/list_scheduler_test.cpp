// The searched schedule: valid for every size (odd ones too), within its activation cap, and
// at least as fast as the one-direction families that fit the same cap.
#include "dualpipe/sim/list_scheduler.h"

#include <gtest/gtest.h>

#include <tuple>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {
namespace {

class SearchTest : public testing::TestWithParam<std::tuple<int, int, std::string>> {};

TEST_P(SearchTest, ValidWithinTheCapAndNoSlowerThanFittingFamilies) {
  const auto& [ranks, microbatches, costs_text] = GetParam();
  const CostModel costs = parse_cost_model(costs_text);
  for (int cap : {0, 1, 2, ranks}) {
    SearchOptions options{ranks, microbatches, costs, cap};
    const SearchResult found = search_schedule(options);
    ASSERT_NO_THROW(schedule::validate(found.schedule)) << "cap " << cap;
    const SimResult result = simulate(found.schedule, costs);
    EXPECT_DOUBLE_EQ(result.makespan, found.makespan);
    if (cap > 0) {
      EXPECT_LE(result.max_peak_activations(), cap) << found.policy;
    }
    EXPECT_GT(found.policies_tried, 0);
    // Every one-stage-per-rank family (1F1B, ZB1P, GPipe) whose peak fits the cap.
    for (const char* name : {"1f1b", "zb1p", "gpipe"}) {
      if (!schedule::schedule_facts(name).accepts(ranks, microbatches)) continue;
      const SimResult family = simulate(schedule::build_schedule(name, ranks, microbatches), costs);
      if (cap > 0 && family.max_peak_activations() > cap) continue;
      EXPECT_LE(found.makespan, family.makespan)
          << name << " cap " << cap << ": search " << found.policy;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, SearchTest,
    testing::Combine(testing::Values(1, 2, 3, 4, 7), testing::Values(1, 5, 8, 13),
                     testing::Values("F=1,B=2,W=1", "F=1,B=1,W=1", "F=1,B=3,W=2,comm=1",
                                     "F=2,B=3,W=1,comm=0.5")),
    [](const auto& info) {
      return "pp" + std::to_string(std::get<0>(info.param)) + "_c" +
             std::to_string(std::get<1>(info.param)) + "_costs" + std::to_string(info.index % 4);
    });

TEST(Search, RefusesBadOptionsNamingTheValue) {
  auto error_of = [](SearchOptions options) {
    try {
      search_schedule(options);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of({4, 8, CostModel{}, -1}).find("got -1"), std::string::npos);
  EXPECT_NE(error_of({0, 8, CostModel{}, 0}).find("num_ranks=0"), std::string::npos);
  EXPECT_NE(error_of({4, 0, CostModel{}, 0}).find("got 0"), std::string::npos);
  CostModel negative;
  negative.forward = -1;
  EXPECT_NE(error_of({4, 8, negative, 0}).find("-1"), std::string::npos);
}

}  // namespace
}  // namespace dualpipe::sim

// The searched schedules: valid for every size (odd ones too), within their activation cap, at
// least as fast as the families of their placement that fit the same cap, and the walk's own
// timing is the simulator's.
#include "dualpipe/sim/list_scheduler.h"

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dualpipe/schedule/list_schedule.h"
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
    SearchOptions options{ranks, microbatches, costs, cap, "search"};
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
  EXPECT_NE(error_of({4, 8, CostModel{}, 0, "search-x"}).find("got \"search-x\""),
            std::string::npos);
  EXPECT_NE(error_of({3, 8, CostModel{}, 0, "search-dual"}).find("num_ranks=3"), std::string::npos);
}

// On a V and on DualPipe's placement: valid, within the cap, the walk's timing equal to the
// simulator's, and no slower than the families sharing the placement where they fit.
class PlacementSearchTest
    : public testing::TestWithParam<std::tuple<std::string, int, int, std::string>> {};

TEST_P(PlacementSearchTest, ValidWithinTheCapAndNoSlowerThanTheFamiliesOfItsPlacement) {
  const auto& [layout, ranks, microbatches, costs_text] = GetParam();
  const CostModel costs = parse_cost_model(costs_text);
  const std::vector<std::string> families =
      layout == "search-v" ? std::vector<std::string>{"zbv", "v-half", "v-min", "dualpipev"}
                           : std::vector<std::string>{"dualpipe"};
  for (int cap : {0, 2, ranks + 1, 2 * ranks}) {
    const SearchResult found = search_schedule({ranks, microbatches, costs, cap, layout});
    ASSERT_NO_THROW(schedule::validate(found.schedule)) << layout << " cap " << cap;
    EXPECT_EQ(found.schedule.name, layout);
    EXPECT_EQ(found.schedule.placement, schedule::schedule_placement(layout, ranks));
    const SimResult result = simulate(found.schedule, costs);
    EXPECT_DOUBLE_EQ(result.makespan, found.makespan);
    EXPECT_EQ(result.max_peak_activations(), found.peak_activations);
    if (cap > 0) {
      EXPECT_LE(found.peak_activations, cap) << found.policy;
    }
    for (const std::string& name : families) {
      if (!schedule::schedule_facts(name).accepts(ranks, microbatches)) continue;
      const SimResult family = simulate(schedule::build_schedule(name, ranks, microbatches), costs);
      if (cap > 0 && family.max_peak_activations() > cap) continue;
      // The families of the placement are among the search's candidates: never behind them.
      EXPECT_LE(found.makespan, family.makespan)
          << name << " cap " << cap << ": " << layout << " " << found.policy;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Placements, PlacementSearchTest,
                         testing::Combine(testing::Values("search-v", "search-dual"),
                                          testing::Values(2, 4, 6), testing::Values(2, 8, 14),
                                          testing::Values("F=1,B=2,W=1",
                                                          "F=1,B=3,W=2,FB=3,comm=1")),
                         [](const auto& info) {
                           std::string layout = std::get<0>(info.param);
                           layout = layout == "search-v" ? "v" : "dual";
                           return layout + "_pp" + std::to_string(std::get<1>(info.param)) + "_c" +
                                  std::to_string(std::get<2>(info.param)) + "_costs" +
                                  std::to_string(info.index % 2);
                         });

// The search decides by the walk's own step time and peak: for every policy on every placement
// they are the simulator's (with communication inserted), and the walk is a valid schedule.
TEST(Search, EveryWalkIsTimedAsTheSimulatorTimesIt) {
  for (const char* layout : kSearchedScheduleNames) {
    for (const auto& [ranks, microbatches] : {std::pair{2, 6}, std::pair{4, 8}, std::pair{4, 5}}) {
      if (!schedule::schedule_facts(layout).accepts(ranks, microbatches)) continue;
      for (const char* costs_text : {"F=1,B=2,W=1,FB=2.5", "F=1,B=3,W=2,comm=1,scale=1:2:1:1"}) {
        CostModel costs = parse_cost_model(costs_text);
        const schedule::Placement placement = schedule::schedule_placement(layout, ranks);
        if (static_cast<int>(costs.stage_scale.size()) != placement.num_stages()) {
          costs.stage_scale.assign(placement.num_stages(), 1.0);
          costs.stage_scale.back() = 2.0;
        }
        schedule::ListCosts walk_costs;
        walk_costs.op_time = [&](const schedule::Op& op) { return op_cost(op, costs); };
        walk_costs.comm = costs.comm;
        for (const schedule::ListPolicy& policy :
             schedule::list_policies(placement, microbatches)) {
          const schedule::ListSchedule walked =
              schedule::list_schedule(layout, placement, microbatches, policy, walk_costs);
          const std::string what = std::string(layout) + " " + std::to_string(ranks) + "x" +
                                   std::to_string(microbatches) + " " + costs_text + " " +
                                   policy.describe();
          ASSERT_NO_THROW(schedule::validate(walked.schedule)) << what;
          const SimResult result = simulate(walked.schedule, costs);
          EXPECT_DOUBLE_EQ(result.makespan, walked.makespan) << what;
          EXPECT_EQ(result.max_peak_activations(), walked.peak_activations) << what;
        }
      }
    }
  }
}

// Families the caller built (the planner's) serve as the search's candidates exactly as the ones
// it builds itself: the same result on every placement.
TEST(Search, FamiliesBuiltByTheCallerGiveTheSameResult) {
  const CostModel costs = parse_cost_model("F=1,B=2,W=1,comm=0.5");
  std::vector<schedule::Schedule> built;
  for (const std::string& name : schedule::schedule_names()) {
    if (!is_searched_schedule(name)) built.push_back(schedule::build_schedule(name, 4, 8));
  }
  std::vector<const schedule::Schedule*> families;
  for (const schedule::Schedule& s : built) families.push_back(&s);
  for (const char* layout : kSearchedScheduleNames) {
    for (int cap : {0, 3}) {
      SearchOptions options{4, 8, costs, cap, layout};
      const SearchResult own = search_schedule(options);
      options.built_families = &families;
      const SearchResult given = search_schedule(options);
      EXPECT_EQ(given.schedule, own.schedule) << layout << " cap " << cap;
      EXPECT_EQ(given.policy, own.policy) << layout << " cap " << cap;
    }
  }
}

// The registry's builds (default costs) keep within the memory of their placement's family.
TEST(Search, RegistryBuildsKeepTheirFamilysMemory) {
  for (int ranks : {1, 2, 3, 4, 8}) {
    for (int microbatches : {2, 4, 8, 20}) {
      const SimResult one = simulate(schedule::build_schedule("search", ranks, microbatches), {});
      EXPECT_LE(one.max_peak_activations(), ranks);
      const SimResult v = simulate(schedule::build_schedule("search-v", ranks, microbatches), {});
      EXPECT_LE(v.max_peak_activations(), 2 * ranks);
      if (ranks % 2 == 0) {
        const SimResult dual =
            simulate(schedule::build_schedule("search-dual", ranks, microbatches), {});
        EXPECT_LE(dual.max_peak_activations(), ranks + 1);
      }
    }
  }
}

}  // namespace
}  // namespace dualpipe::sim

// The exact search: on the smallest sizes its step time is the minimum over every valid
// interleaving of each rank's forwards, input-gradient backwards and weight gradients (all of
// them enumerated and simulated here), within the activation limit; it is never slower than the
// list scheduler or the one-stage families, and says when it could not search the whole tree.
#include "dualpipe/sim/exact_search.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "dualpipe/schedule/communication.h"
#include "dualpipe/schedule/placement.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/sim/list_scheduler.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {
namespace {

using schedule::Op;
using schedule::Program;

// Every order of rank r's F, Bz and W ops with each kind in micro-batch order, Bz(m) after F(m)
// and W(m) after Bz(m).
std::vector<Program> rank_orders(int r, int microbatches) {
  std::vector<Program> all;
  Program current;
  std::function<void(int, int, int)> extend = [&](int f, int b, int w) {
    if (w == microbatches) {
      all.push_back(current);
      return;
    }
    if (f < microbatches) {
      current.push_back(Op::forward(0, r, f));
      extend(f + 1, b, w);
      current.pop_back();
    }
    if (b < f) {
      current.push_back(Op::backward(0, r, b, true));
      extend(f, b + 1, w);
      current.pop_back();
    }
    if (w < b) {
      current.push_back(Op::weight(0, r, w));
      extend(f, b, w + 1);
      current.pop_back();
    }
  };
  extend(0, 0, 0);
  return all;
}

// The fastest valid schedule over all combinations of rank orders, within the limit.
double brute_force(int ranks, int microbatches, const CostModel& costs, int limit) {
  std::vector<std::vector<Program>> orders;
  for (int r = 0; r < ranks; ++r) orders.push_back(rank_orders(r, microbatches));
  double best = std::numeric_limits<double>::infinity();
  std::vector<std::size_t> pick(ranks, 0);
  for (;;) {
    schedule::Schedule s;
    s.name = "search";
    s.num_microbatches = microbatches;
    s.placement = schedule::Placement::round_robin(ranks, ranks);
    for (int r = 0; r < ranks; ++r) s.programs.push_back(orders[r][pick[r]]);
    schedule::insert_communication(s);
    try {
      const SimResult result = simulate(s, costs);
      if (limit == 0 || result.max_peak_activations() <= limit) {
        best = std::min(best, result.makespan);
      }
    } catch (const std::runtime_error&) {
      // a deadlock: rank orders that wait on each other
    }
    int r = 0;
    while (r < ranks && ++pick[r] == orders[r].size()) pick[r++] = 0;
    if (r == ranks) break;
  }
  return best;
}

class ExactSearchTest : public testing::TestWithParam<std::tuple<int, int, std::string, int>> {};

TEST_P(ExactSearchTest, EqualsTheMinimumOverEveryInterleaving) {
  const auto& [ranks, microbatches, costs_text, limit] = GetParam();
  const CostModel costs = parse_cost_model(costs_text);
  ExactSearchOptions options;
  options.num_ranks = ranks;
  options.num_microbatches = microbatches;
  options.costs = costs;
  options.max_activations = limit;
  const ExactSearchResult found = exact_search(options);
  ASSERT_TRUE(found.complete);
  ASSERT_TRUE(found.schedule.has_value());
  const double brute = brute_force(ranks, microbatches, costs, limit);
  EXPECT_DOUBLE_EQ(found.makespan, brute);
  const SimResult result = simulate(*found.schedule, costs);
  EXPECT_DOUBLE_EQ(result.makespan, found.makespan);
  if (limit > 0) {
    EXPECT_LE(result.max_peak_activations(), limit);
  }
  // Asked for something faster than the optimum, it finds nothing and says it searched all.
  options.faster_than = found.makespan;
  const ExactSearchResult none = exact_search(options);
  EXPECT_FALSE(none.schedule.has_value());
  EXPECT_TRUE(none.complete);
}

INSTANTIATE_TEST_SUITE_P(Smallest, ExactSearchTest,
                         testing::Values(std::make_tuple(2, 2, "F=1,B=2,W=1", 0),
                                         std::make_tuple(2, 3, "F=1,B=2,W=1", 0),
                                         std::make_tuple(2, 3, "F=1,B=2,W=1", 1),
                                         std::make_tuple(2, 3, "F=1,B=3,W=2,comm=1", 0),
                                         std::make_tuple(3, 2, "F=1,B=2,W=1,comm=0.5", 0),
                                         std::make_tuple(3, 2, "F=2,B=3,W=1,scale=1:1:2", 1),
                                         std::make_tuple(1, 4, "F=1,B=2,W=1", 2)),
                         [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(ExactSearch, NeverSlowerThanTheListSchedulerOrTheOneStageFamilies) {
  for (const auto& [ranks, microbatches] : {std::pair{4, 6}, std::pair{3, 8}, std::pair{4, 4}}) {
    for (const char* costs_text : {"F=1,B=2,W=1", "F=1,B=3,W=2,comm=1", "comm=0.5"}) {
      const CostModel costs = parse_cost_model(costs_text);
      ExactSearchOptions options;
      options.num_ranks = ranks;
      options.num_microbatches = microbatches;
      options.costs = costs;
      const ExactSearchResult found = exact_search(options);
      ASSERT_TRUE(found.schedule.has_value());
      const SearchResult listed = search_schedule({ranks, microbatches, costs, 0, "search"});
      EXPECT_LE(found.makespan, listed.makespan) << ranks << "x" << microbatches << costs_text;
      for (const char* name : {"1f1b", "zb1p", "gpipe"}) {
        const SimResult family =
            simulate(schedule::build_schedule(name, ranks, microbatches), costs);
        EXPECT_LE(found.makespan, family.makespan) << name << " " << costs_text;
      }
    }
  }
}

TEST(ExactSearch, SaysWhenItStoppedAtTheNodeLimit) {
  ExactSearchOptions options;
  options.num_ranks = 4;
  options.num_microbatches = 8;
  options.max_activations = 2;
  options.most_nodes = 100;
  const ExactSearchResult found = exact_search(options);
  EXPECT_FALSE(found.complete);
  EXPECT_LE(found.nodes, 100);
}

TEST(ExactSearch, RefusesSizesBeyondItsLimitNamingThem) {
  ExactSearchOptions options;
  options.num_ranks = 8;
  options.num_microbatches = 8;
  try {
    exact_search(options);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_ranks=8, num_microbatches=8"), std::string::npos)
        << e.what();
  }
  options.num_microbatches = 2;
  options.max_activations = -1;
  EXPECT_THROW(exact_search(options), std::invalid_argument);
}

}  // namespace
}  // namespace dualpipe::sim

// `dualpipe plan`'s planner: every family at every valid size, ranked by simulated step time
// under the limits; the winner is what the simulator says; bad input names the value.
#include "dualpipe/sim/planner.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/sim/list_scheduler.h"

namespace dualpipe::sim {
namespace {

PlanRequest request(int ranks, int microbatches, const std::string& costs = "") {
  PlanRequest r;
  r.pipeline_sizes = {ranks};
  r.microbatch_counts = {microbatches};
  r.costs = parse_cost_model(costs);
  return r;
}

std::string error_of(const PlanRequest& r) {
  try {
    plan(r);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

const PlanCandidate& find(const Plan& p, const std::string& name) {
  for (const PlanCandidate& c : p.candidates) {
    if (c.schedule == name) return c;
  }
  throw std::out_of_range("no candidate " + name);
}

TEST(Planner, ListsEveryAcceptingFamilyAndTheSearchRankedBySimulatedStepTime) {
  const Plan p = plan(request(4, 8));
  std::size_t accepting = 0;
  for (const std::string& name : schedule::schedule_names()) {
    if (!schedule::schedule_facts(name).accepts(4, 8)) continue;
    ++accepting;
    const PlanCandidate& c = find(p, name);
    if (is_searched_schedule(name)) continue;  // searched on the costs: not the registry's build
    // The simulator confirms each row.
    const schedule::Schedule built = schedule::build_schedule(name, 4, 8);
    const SimResult direct = simulate(built, CostModel{});
    // NOTE: the costs are those of one rank's share of the model; a schedule with 2R stages
    // (DualPipeV, the V schedules, interleaved with v = 2) runs stages of half that share.
    EXPECT_DOUBLE_EQ(c.makespan, direct.makespan * 4 / built.num_stages())
        << name << " (" << built.num_stages() << " stages on 4 ranks)";
  }
  EXPECT_EQ(p.candidates.size(), accepting);  // the searched placements are in the registry
  for (std::size_t i = 1; i < p.candidates.size(); ++i) {
    EXPECT_LE(p.candidates[i - 1].makespan, p.candidates[i].makespan);
    EXPECT_FALSE(p.candidates[i].why.empty()) << p.candidates[i].schedule;
  }
  EXPECT_EQ(p.candidates[0].why, "");
  // The search on DualPipe's placement wins on the defaults: 25 against ZB-V's 25.5 (matched by
  // the search on a V), DualPipe's 26 and ZB1P's (and the one-stage search's) 27.
  EXPECT_EQ(p.candidates[0].schedule, "search-dual");
  EXPECT_DOUBLE_EQ(p.winner_result.makespan, 25);
  EXPECT_DOUBLE_EQ(find(p, "zbv").makespan, 25.5);
  EXPECT_DOUBLE_EQ(find(p, "search-v").makespan, 25.5);
  EXPECT_DOUBLE_EQ(find(p, "dualpipe").makespan, 26);
  EXPECT_DOUBLE_EQ(find(p, "search").makespan, 27);
  EXPECT_NE(find(p, "1f1b").why.find("bubble: max bubble 9 vs the winner's 1"), std::string::npos)
      << find(p, "1f1b").why;
}

TEST(Planner, MemoryLimitExcludesAndNamesWhy) {
  PlanRequest r = request(4, 8);
  r.max_activations = 4;  // DualPipe needs 5 (PP+1), DualPipeV 4.5, GPipe 8
  const Plan p = plan(r);
  EXPECT_TRUE(p.candidates[0].fits);
  EXPECT_LE(p.candidates[0].activation_units, 4);
  EXPECT_FALSE(find(p, "dualpipe").fits);
  EXPECT_EQ(find(p, "dualpipe").why, "memory: 5 activation units > limit 4");
  EXPECT_EQ(find(p, "gpipe").why, "memory: 8 activation units > limit 4");
  // The search matches the best fitting family (ZB1P, 27).
  EXPECT_DOUBLE_EQ(find(p, "search").makespan, 27);
  // On a V the search matches ZB-V (25.5), the best fitting family.
  EXPECT_DOUBLE_EQ(p.candidates[0].makespan, 25.5);
  EXPECT_DOUBLE_EQ(find(p, "search-v").makespan, 25.5);
  EXPECT_DOUBLE_EQ(find(p, "zb1p").makespan, 27);
}

TEST(Planner, TightMemoryOnlyTheSearchFits) {
  PlanRequest r = request(8, 16);
  r.max_activations = 3;
  const Plan p = plan(r);
  EXPECT_TRUE(is_searched_schedule(p.candidates[0].schedule)) << p.candidates[0].schedule;
  EXPECT_LE(p.candidates[0].activation_units, 3);
  for (const PlanCandidate& c : p.candidates) {
    if (!is_searched_schedule(c.schedule)) {
      EXPECT_FALSE(c.fits) << c.schedule;
    }
  }
}

TEST(Planner, ByteLimitCountsDualPipesTwoParameterCopies) {
  PlanRequest r = request(8, 24);
  r.activation_bytes = 2.0 * (1 << 30);
  r.param_bytes = 10.0 * (1 << 30);
  r.memory_bytes = 30.0 * (1 << 30);
  const Plan p = plan(r);
  const PlanCandidate& dualpipe = find(p, "dualpipe");
  EXPECT_DOUBLE_EQ(dualpipe.memory_bytes, (9 * 2.0 + 2 * 10.0) * (1 << 30));
  EXPECT_FALSE(dualpipe.fits);
  EXPECT_DOUBLE_EQ(find(p, "zb1p").memory_bytes, (8 * 2.0 + 10.0) * (1 << 30));
  EXPECT_TRUE(find(p, "zb1p").fits);
  EXPECT_LE(p.candidates[0].makespan, find(p, "zb1p").makespan);
}

TEST(Planner, ExpensiveCommunicationTheSearchBeatsTheFixedFamilies) {
  PlanRequest r = request(8, 16, "comm=1");
  r.max_activations = 8;
  const Plan p = plan(r);
  EXPECT_TRUE(is_searched_schedule(p.candidates[0].schedule)) << p.candidates[0].schedule;
  EXPECT_LT(p.candidates[0].makespan, find(p, "zb1p").makespan);
  EXPECT_LT(find(p, "search").makespan, find(p, "zb1p").makespan);
}

// docs/plan.md's table: under every limit the best searched schedule is at least as fast as
// the best fixed family that fits, and faster where DualPipe's placement or cheap memory lets
// the search pack the pipeline tighter.
TEST(Planner, TheSearchMatchesOrBeatsTheBestFittingFamily) {
  struct Case {
    int ranks, microbatches;
    std::string costs;
    double max_activations;
    double memory_gib, activation_gib, param_gib;
    bool beats;
  };
  const Case cases[] = {
      {8, 20, "", 0, 0, 0, 0, true},
      {8, 20, "", 8, 0, 0, 0, false},
      {8, 20, "", 4, 0, 0, 0, false},
      {8, 16, "F=1,B=3,W=2,FB=3.5", 8, 0, 0, 0, false},
      {8, 16, "F=1,B=1,W=1,FB=2", 0, 0, 0, 0, true},
      {8, 16, "comm=1", 8, 0, 0, 0, true},
      {8, 16, "comm=2", 0, 0, 0, 0, true},
      {8, 24, "", 0, 30, 2, 10, false},
      {8, 16, "F=2,B=3,W=1,FB=4.5,scale=1:1:1:1:1:1:1:2", 8, 0, 0, 0, false},
      {8, 16, "comm=0.5", 5, 0, 0, 0, false},
      {4, 8, "F=1,B=2,W=1,FB=2", 0, 0, 0, 0, true},
  };
  for (const Case& k : cases) {
    PlanRequest r = request(k.ranks, k.microbatches, k.costs);
    r.max_activations = k.max_activations;
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    r.memory_bytes = k.memory_gib * kGiB;
    r.activation_bytes = k.activation_gib * kGiB;
    r.param_bytes = k.param_gib * kGiB;
    const Plan p = plan(r);
    double best_family = std::numeric_limits<double>::infinity();
    double best_search = std::numeric_limits<double>::infinity();
    for (const PlanCandidate& c : p.candidates) {
      if (!c.fits) continue;
      double& best = is_searched_schedule(c.schedule) ? best_search : best_family;
      best = std::min(best, c.makespan);
    }
    const std::string what = std::to_string(k.ranks) + "x" + std::to_string(k.microbatches) +
                             " costs " + k.costs + " limit " + std::to_string(k.max_activations);
    EXPECT_LE(best_search, best_family) << what;
    if (k.beats) {
      EXPECT_LT(best_search, best_family) << what;
    }
    EXPECT_TRUE(is_searched_schedule(p.candidates[0].schedule) ||
                p.candidates[0].makespan == best_search)
        << what;
  }
}

TEST(Planner, GpuCountAndGlobalBatchGiveTheSizes) {
  PlanRequest r;
  r.pipeline_sizes = {2, 4};
  r.gpus = 8;
  r.global_batch = 64;
  r.micro_batch_sizes = {1, 2};
  r.schedules = {"1f1b"};
  r.search = false;
  const Plan p = plan(r);
  // PP=2: DP=4, 16 or 8 micro-batches; PP=4: DP=2, 32 or 16.
  ASSERT_EQ(p.candidates.size(), 4u);
  for (const PlanCandidate& c : p.candidates) {
    EXPECT_EQ(c.data_parallel * c.num_ranks, 8);
    EXPECT_EQ(c.data_parallel * c.num_microbatches * c.micro_batch_size, 64);
  }
  // Costs are those of 1 sample through half the model (PP=2, the reference): a stage of PP=4
  // is half of that, a micro-batch of 2 samples twice.
  const CostModel c = scaled_costs(r, 2, 4);
  EXPECT_DOUBLE_EQ(c.forward, 1.0);
  EXPECT_DOUBLE_EQ(c.backward, 2.0);
}

TEST(Planner, BadInputIsOneLineNamingTheValue) {
  PlanRequest r = request(4, 8);
  r.costs.forward = -1;
  EXPECT_NE(error_of(r).find("-1"), std::string::npos) << error_of(r);
  r = request(0, 8);
  EXPECT_NE(error_of(r).find("got 0"), std::string::npos) << error_of(r);
  r = request(4, 0);
  EXPECT_NE(error_of(r).find("got 0"), std::string::npos) << error_of(r);
  r = request(3, 8);
  r.gpus = 8;
  EXPECT_NE(error_of(r).find("pipeline size 3 does not divide gpus=8"), std::string::npos);
  r = request(4, 8);
  r.max_activations = -2;
  EXPECT_NE(error_of(r).find("got -2"), std::string::npos) << error_of(r);
  r = request(4, 8);
  r.schedules = {"nope"};
  EXPECT_NE(error_of(r).find("unknown schedule \"nope\""), std::string::npos) << error_of(r);
  r = request(4, 8);
  r.memory_bytes = 1e9;
  EXPECT_NE(error_of(r).find("needs activation bytes"), std::string::npos) << error_of(r);
  r = request(4, 8);
  r.gpus = 8;
  r.global_batch = 3;
  r.micro_batch_sizes = {2};
  EXPECT_NE(error_of(r).find("global batch 3"), std::string::npos) << error_of(r);
  r = request(4, 8);
  r.costs = parse_cost_model("scale=1:2");
  EXPECT_NE(error_of(r).find("got 2 entries"), std::string::npos) << error_of(r);
}

TEST(Planner, ALimitNoScheduleMeetsPrintsTheSmallestThatWorks) {
  PlanRequest r = request(4, 8);
  r.max_activations = 0.5;
  EXPECT_EQ(error_of(r),
            "no schedule fits the max activations 0.5 units per rank; the smallest memory that "
            "works is 1 units (search-v on 4 ranks, 8 micro-batches)");
  r.search = false;
  EXPECT_NE(error_of(r).find("the smallest memory that works is 2 units (v-min"), std::string::npos)
      << error_of(r);
}

TEST(Planner, StageMultipliersFollowTheStages) {
  PlanRequest r = request(2, 4, "scale=1:3");
  // DualPipeV on 2 ranks has 4 half stages: stages 0, 1 cover rank share 0, stages 2, 3 share 1.
  const CostModel v = scaled_costs(r, 1, 4);
  ASSERT_EQ(v.stage_scale.size(), 4u);
  EXPECT_DOUBLE_EQ(v.stage_scale[1], 1);
  EXPECT_DOUBLE_EQ(v.stage_scale[2], 3);
  EXPECT_DOUBLE_EQ(v.forward, 0.5);
  // One stage covering both shares: their mean.
  EXPECT_DOUBLE_EQ(scaled_costs(r, 1, 1).stage_scale[0], 2);
  EXPECT_NO_THROW(plan(r));
}

}  // namespace
}  // namespace dualpipe::sim

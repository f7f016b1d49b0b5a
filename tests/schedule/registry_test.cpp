#include "dualpipe/schedule/registry.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace dualpipe::schedule {
namespace {

struct Size {
  int num_ranks;
  int num_microbatches;
};

// schedule_placement is the builder's placement for every accepted size, odd ones included.
TEST(ScheduleRegistryTest, PlacementEqualsTheBuildersPlacement) {
  const Size sizes[] = {{1, 1}, {1, 4}, {2, 4}, {2, 8}, {3, 6}, {4, 8}, {4, 12}, {6, 12}, {7, 14}};
  int checked = 0;
  for (const std::string& name : schedule_names()) {
    for (const Size& size : sizes) {
      Schedule built;
      try {
        built = build_schedule(name, size.num_ranks, size.num_microbatches);
      } catch (const std::invalid_argument&) {
        continue;  // a size this builder rejects; the placement below is still defined
      }
      EXPECT_EQ(schedule_placement(name, size.num_ranks), built.placement)
          << name << " num_ranks=" << size.num_ranks;
      ++checked;
    }
  }
  // 1f1b, zb1p, gpipe, interleaved-1f1b (every count is a multiple of the ranks), zbv, v-half,
  // v-min, search and search-v take all 9 sizes; dualpipe and search-dual the 5 with even ranks
  // (all have num_microbatches >= 2 * num_ranks); dualpipev all but {1, 1}.
  EXPECT_EQ(checked, 9 * 9 + 2 * 5 + 8);
  for (int v : {1, 3}) {
    EXPECT_EQ(schedule_placement("interleaved-1f1b", 3, {v}),
              build_schedule("interleaved-1f1b", 3, 6, {v}).placement)
        << v;
  }
}

// interleaved-1f1b takes its stages per rank as a build option (default 2, its facts say so);
// the others hold a fixed number and refuse any other, naming the value.
TEST(ScheduleRegistryTest, StagesPerRankIsABuildOption) {
  const ScheduleFacts interleaved = schedule_facts("interleaved-1f1b");
  EXPECT_TRUE(interleaved.stages_per_rank_choosable);
  EXPECT_EQ(interleaved.stages_per_rank, 2);
  EXPECT_EQ(schedule_placement("interleaved-1f1b", 4), Placement::round_robin(4, 8));
  EXPECT_EQ(schedule_placement("interleaved-1f1b", 4, {3}), Placement::round_robin(4, 12));
  const Schedule v3 = build_schedule("interleaved-1f1b", 4, 8, {3});
  EXPECT_EQ(v3.num_stages(), 12);
  EXPECT_EQ(build_options_of(v3).stages_per_rank, 3);
  EXPECT_EQ(build_options_of(build_schedule("dualpipe", 4, 8)).stages_per_rank, 2);
  for (const std::string& name : schedule_names()) {
    const ScheduleFacts facts = schedule_facts(name);
    EXPECT_EQ(facts.stages_per_rank_choosable, name == "interleaved-1f1b") << name;
    const Placement placement = schedule_placement(name, 2);
    EXPECT_EQ(placement.num_directions() * placement.num_stages(), 2 * facts.stages_per_rank)
        << name;
  }
  for (const auto& [name, v] :
       {std::pair{"1f1b", 2}, std::pair{"dualpipev", 3}, std::pair{"interleaved-1f1b", -1},
        std::pair{"interleaved-1f1b", kMaxStagesPerRank + 1}}) {
    try {
      build_schedule(name, 2, 4, {v});
      FAIL() << name << " v=" << v;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("stages_per_rank=" + std::to_string(v)),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(schedule_placement(name, 2, {v}), std::invalid_argument) << name;
  }
  EXPECT_NO_THROW(build_schedule("1f1b", 2, 4, {1}));
  try {
    build_schedule("interleaved-1f1b", 64, 2048, {4});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_microbatches * stages_per_rank <= 262144"),
              std::string::npos)
        << e.what();
  }
}

TEST(ScheduleRegistryTest, PlacementRejectsRankCountsTheScheduleNeverAccepts) {
  try {
    schedule_placement("dualpipe", 3);
    FAIL() << "odd rank count accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 2, got num_ranks=3"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(schedule_placement("1f1b", 0), std::invalid_argument);
  try {
    schedule_placement("interleaved", 4);
    FAIL() << "unknown schedule accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("allowed: dualpipe, dualpipev, 1f1b, zb1p, gpipe"),
              std::string::npos)
        << e.what();
  }
}

TEST(ScheduleRegistryTest, DirectionsStartingAndEndingOnARank) {
  const Placement dualpipe = schedule_placement("dualpipe", 4);
  EXPECT_EQ(dualpipe.directions_starting_on(0), std::vector<int>{0});
  EXPECT_EQ(dualpipe.directions_ending_on(0), std::vector<int>{1});
  EXPECT_EQ(dualpipe.directions_starting_on(3), std::vector<int>{1});
  EXPECT_EQ(dualpipe.directions_ending_on(3), std::vector<int>{0});
  EXPECT_TRUE(dualpipe.directions_starting_on(1).empty());
  EXPECT_TRUE(dualpipe.directions_ending_on(2).empty());
  const Placement v = schedule_placement("dualpipev", 3);
  EXPECT_EQ(v.directions_starting_on(0), std::vector<int>{0});
  EXPECT_EQ(v.directions_ending_on(0), std::vector<int>{0});
  EXPECT_TRUE(v.directions_ending_on(2).empty());
  const Placement one_f_one_b = schedule_placement("1f1b", 3);
  EXPECT_EQ(one_f_one_b.directions_ending_on(2), std::vector<int>{0});
  EXPECT_TRUE(one_f_one_b.directions_starting_on(2).empty());
}

}  // namespace
}  // namespace dualpipe::schedule

namespace dualpipe::schedule {
namespace {

// The facts the registry states about accepted sizes are the builders' own rules: for every
// size in a grid, facts.accepts() is true exactly when the builder builds.
TEST(ScheduleFacts, AcceptedSizesAgreeWithTheBuilders) {
  for (const std::string& name : schedule_names()) {
    const ScheduleFacts facts = schedule_facts(name);
    EXPECT_EQ(facts.name, name);
    EXPECT_FALSE(facts.summary.empty()) << name;
    for (int ranks = 1; ranks <= 9; ++ranks) {
      for (int microbatches = 0; microbatches <= 21; ++microbatches) {
        bool built = true;
        try {
          build_schedule(name, ranks, microbatches);
        } catch (const std::invalid_argument&) {
          built = false;
        }
        EXPECT_EQ(facts.accepts(ranks, microbatches), built)
            << name << " ranks=" << ranks << " microbatches=" << microbatches;
      }
    }
  }
}

TEST(ScheduleFacts, PublishedFiguresComeFromTheRegistry) {
  const PublishedCosts costs{1.0, 2.0, 0.5, 2.5};
  EXPECT_EQ(published_figures("1f1b", 4, 8, costs).bubble, 3 * 3.0);
  EXPECT_EQ(published_figures("zb1p", 4, 8, costs).bubble, 3 * 2.0);
  EXPECT_EQ(published_figures("gpipe", 4, 8, costs).peak_activations, 8);
  EXPECT_EQ(published_figures("dualpipe", 8, 16, costs).bubble, 3 * (2.5 + 2.0 - 1.5));
  EXPECT_EQ(published_figures("dualpipe", 8, 16, costs).peak_activations, 9);
  EXPECT_EQ(published_figures("dualpipev", 4, 16, costs).bubble, 3 * (2.5 + 2.0 - 1.5));
  EXPECT_EQ(published_figures("dualpipev", 4, 16, costs).pp_meaning, "PP=2*ranks=8 stages");
  // Interleaved 1F1B: (PP-1)(F+B)/v of a rank's layers (v stages of per-stage cost F, B);
  // activations vPP+PP-1 stages when PP divides the micro-batches.
  EXPECT_EQ(published_figures("interleaved-1f1b", 4, 8, costs).bubble, 3 * 3.0);
  EXPECT_EQ(published_figures("interleaved-1f1b", 4, 8, costs, {3}).peak_activations, 15);
  EXPECT_EQ(published_figures("interleaved-1f1b", 4, 8, costs, {3}).activations_formula,
            "vPP+PP-1");
  EXPECT_EQ(published_figures("interleaved-1f1b", 4, 10, costs).peak_activations, 12);  // Mr=5
  EXPECT_EQ(published_figures("interleaved-1f1b", 4, 2, costs).peak_activations, 4);    // all
  EXPECT_EQ(published_figures("zbv", 4, 8, costs).bubble, 3 * 1.0);
  EXPECT_EQ(published_figures("zbv", 4, 8, costs).peak_activations, 8);
  EXPECT_EQ(published_figures("v-half", 8, 16, costs).peak_activations, 10);
  EXPECT_EQ(published_figures("v-min", 8, 16, costs).peak_activations, 8);
  EXPECT_TRUE(published_figures("v-min", 8, 16, costs).bubble_formula.empty());
  EXPECT_THROW(published_figures("zbv", 4, 8, costs, {3}), std::invalid_argument);
  EXPECT_TRUE(is_schedule_name("dualpipe"));
  EXPECT_FALSE(is_schedule_name("interleaved"));
  EXPECT_THROW(schedule_facts("interleaved"), std::invalid_argument);
}

// Before: build_schedule("dualpipe", 1000000, 1000000) allocated without limit.
TEST(ScheduleFacts, SizeLimitsAreCheckedBeforeBuilding) {
  for (const std::string& name : schedule_names()) {
    try {
      build_schedule(name, 1000000, 1000000);
      FAIL() << name;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("num_ranks * num_microbatches <= 262144"),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(build_schedule(name, 2, kMaxRankMicrobatches), std::invalid_argument) << name;
    EXPECT_THROW(schedule_placement(name, kMaxRanks + 2), std::invalid_argument) << name;
  }
  EXPECT_NO_THROW(build_schedule("1f1b", 64, 4096));
}

TEST(ScheduleFacts, RefusalsSayWhatWouldBeAccepted) {
  try {
    build_schedule("dualpipe", 4, 5);
    FAIL();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("a multiple of 2"), std::string::npos) << what;
    EXPECT_NE(what.find(">= 2 * num_ranks (8 for num_ranks=4)"), std::string::npos) << what;
    EXPECT_NE(what.find("num_microbatches=8 would do"), std::string::npos) << what;
  }
  EXPECT_EQ(schedule_facts("dualpipe").smallest_microbatches(4, 9), 10);
  EXPECT_EQ(schedule_facts("dualpipe").smallest_microbatches(3), -1);
  EXPECT_EQ(schedule_facts("gpipe").smallest_microbatches(3), 1);
  try {
    build_schedule("interleaved-1f1b", 4, 13);
    FAIL();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("3 rounds"), std::string::npos) << what;
    EXPECT_NE(what.find("num_microbatches=15 would do"), std::string::npos) << what;
  }
  EXPECT_EQ(schedule_facts("interleaved-1f1b").smallest_microbatches(4, 9), 10);
  EXPECT_EQ(schedule_facts("interleaved-1f1b").smallest_microbatches(4, 17), 20);
}

}  // namespace
}  // namespace dualpipe::schedule

#include "dualpipe/train/pipeline_report.h"

#include <gtest/gtest.h>

#include "dualpipe/schedule/registry.h"

namespace dualpipe::train {
namespace {

// A report whose compute events are exactly the simulator's timeline (1 unit = 1 ms): the
// measured bubble must then equal the simulated one.
PipelineReport report_from_simulation(const schedule::Schedule& s, const sim::CostModel& costs) {
  const sim::SimResult r = sim::simulate(s, costs);
  PipelineReport report;
  report.step = 3;
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    RankReport rr;
    for (const sim::TimedOp& op : r.ranks[rank].timeline) {
      rr.events.push_back({"op", "compute", 5000 + static_cast<std::int64_t>(op.start * 1000),
                           static_cast<std::int64_t>((op.end - op.start) * 1000)});
      rr.events.push_back({"send", "send", 5000, 1});
    }
    rr.activation_peak = r.ranks[rank].peak_activations;
    report.ranks.push_back(rr);
  }
  return report;
}

TEST(PipelineReport, MeasuredEqualsSimulatedWhenTheTimesAreTheModels) {
  for (const char* name : {"dualpipe", "1f1b", "zb1p"}) {
    const schedule::Schedule s = schedule::build_schedule(name, 4, 8);
    sim::CostModel costs;  // F=1, B=2, W=1, FB=3 (ms here)
    const Comparison c = compare_with_simulator(report_from_simulation(s, costs), s);
    ASSERT_TRUE(c.timeline_matches_program) << name;
    EXPECT_NEAR(c.makespan_s, c.predicted_makespan_s, 1e-9) << name;
    for (const RankComparison& rc : c.ranks) {
      EXPECT_NEAR(rc.measured_bubble_s, rc.predicted_bubble_s, 1e-9) << name;
      EXPECT_EQ(rc.measured_peak_activations, rc.predicted_peak_activations) << name;
    }
    EXPECT_NEAR(c.costs.forward, 1e-3, 1e-12) << name;
  }
}

TEST(PipelineReport, DetectsATimelineThatDoesNotMatchTheProgram) {
  const schedule::Schedule s = schedule::build_schedule("1f1b", 2, 4);
  PipelineReport report = report_from_simulation(s, sim::CostModel{});
  report.ranks[1].events.pop_back();
  report.ranks[1].events.pop_back();
  EXPECT_FALSE(compare_with_simulator(report, s).timeline_matches_program);
}

}  // namespace
}  // namespace dualpipe::train

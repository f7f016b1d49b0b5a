#pragma once
// How the pipeline behaved in one traced training step: every rank's measured compute intervals
// gathered on rank 0, the measured bubble per rank next to the simulator's prediction (the
// simulator timed with the step's own mean F/B/W/FB durations), peak activations, and the run
// folder's trace.json (merged Chrome trace) and timeline.svg (the measured timeline drawn with
// the sim module's renderer).

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dualpipe/runtime/rendezvous.h"
#include "dualpipe/runtime/trace.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::train {

struct RankReport {
  std::vector<runtime::TraceEvent> events;
  int activation_peak = 0;  // Executor::activation_peak() of the traced step
  double peak_rss_mib = 0.0;
};

struct PipelineReport {
  int step = 0;
  std::vector<RankReport> ranks;  // by world rank; filled on world rank 0 only
};

// Collective over context.store: every world rank calls it once per `step` with its own trace
// of that step; rank 0 gets all ranks' reports, the others an empty `ranks`.
PipelineReport gather_pipeline_report(runtime::DistributedContext& context,
                                      const std::vector<runtime::TraceEvent>& events,
                                      int activation_peak, double peak_rss_mib, int step);

struct RankComparison {
  double busy_s = 0.0;
  double measured_bubble_s = 0.0;   // step makespan (all ranks) - busy
  double predicted_bubble_s = 0.0;  // the simulator's, with the measured mean op costs
  int measured_peak_activations = 0;
  int predicted_peak_activations = 0;
  double peak_rss_mib = 0.0;
};

struct Comparison {
  double makespan_s = 0.0;
  double predicted_makespan_s = 0.0;
  sim::CostModel costs;                   // measured means, seconds
  sim::SimResult measured;                // the measured compute intervals as a SimResult (seconds)
  std::vector<RankComparison> ranks;      // pipeline ranks 0..R-1 (EP pipeline 0)
  bool timeline_matches_program = false;  // measured compute ops line up with the programs
};

// Pure. Uses the first schedule.num_ranks() ranks of `report`. Compute events are matched to
// each rank's compute ops in program order (the executor runs them in that order).
Comparison compare_with_simulator(const PipelineReport& report, const schedule::Schedule& schedule);

// Writes trace.json and timeline.svg into `run_dir`, prints the per-rank table to `out` and adds
// a "pipeline" entry to `summary`.
void write_pipeline_report(const PipelineReport& report, const schedule::Schedule& schedule,
                           const std::string& run_dir, std::ostream& out, nlohmann::json& summary);

}  // namespace dualpipe::train

// `dualpipe plan` speed: planning 16 ranks x 64 micro-batches across every registered family and
// the searched placements (target: under 2 s). Prints wall and CPU time of one run and their
// ratio to the target, and the best searched step time over the best fixed family's.
#include <fmt/format.h>

#include <chrono>
#include <ctime>

#include "dualpipe/sim/list_scheduler.h"
#include "dualpipe/sim/planner.h"

int main() {
  using namespace dualpipe::sim;
  PlanRequest request;
  request.pipeline_sizes = {16};
  request.microbatch_counts = {64};
  const auto wall_start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  const Plan plan = dualpipe::sim::plan(request);
  const double cpu = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  double search = 0, best_fixed = 0;
  for (const PlanCandidate& c : plan.candidates) {
    double& best = is_searched_schedule(c.schedule) ? search : best_fixed;
    if (best == 0) best = c.makespan;  // candidates are ranked: the first of each kind
  }
  fmt::print("plan 16 ranks x 64 micro-batches: {} candidates, winner {}\n", plan.candidates.size(),
             plan.candidates.front().schedule);
  fmt::print("wall {:.3f} s ({:.2f} of the 2 s target), CPU {:.3f} s ({:.2f} of the target)\n",
             wall, wall / 2.0, cpu, cpu / 2.0);
  fmt::print("best searched step time / best fixed family's: {:.4f}\n", search / best_fixed);
  return 0;
}

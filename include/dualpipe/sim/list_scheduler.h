#pragma once
// A schedule searched for the given costs and activation limit, beyond the fixed families: greedy
// list scheduling on one stage per rank with the input/weight gradient split (as the zero-bubble
// authors' auto-scheduler does for ZB), tried under several policies and kept when the simulator
// says it is fastest.
//
// Each policy walks the ranks in time order (always the rank that can act earliest): a rank runs
// the next backward when its gradient has arrived, the next forward while fewer than `cap`
// micro-batches are in flight (forward done, backward not), and pending weight gradients (W)
// in the gaps; the remaining W ops run at the end. Policies: every cap from 1 to the limit (at
// most 2 * num_ranks, plus all micro-batches), uniform or staggered like 1F1B's warm-up, forward
// or backward first when both are ready, W with lookahead (never delaying an input known to
// arrive), into every gap, or at the end, or full backwards. The result is an ordinary Schedule
// (communication inserted, validated) that the simulator, the pictures and the executor run
// like a built one.

#include <string>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"

namespace dualpipe::sim {

// The name searched schedules carry. Not a registered schedule: a searched schedule is built
// for one cost model; save it as CSV to load it under a registered family's name.
inline constexpr const char* kSearchedScheduleName = "search";

struct SearchOptions {
  int num_ranks = 1;
  int num_microbatches = 1;
  CostModel costs;
  // Most micro-batches in flight per rank (the simulator's peak_activations, stage x micro-batch
  // units); 0 means no limit (then caps up to num_microbatches are tried).
  int max_activations = 0;
};

struct SearchResult {
  schedule::Schedule schedule;  // validated
  double makespan = 0.0;        // simulated under options.costs
  int policies_tried = 0;
  std::string policy;  // the winning policy, e.g. "cap=4, backward first, W deferred"
};

// The fastest schedule the policies find. Throws std::invalid_argument naming the values when
// the sizes are out of range (check_size_limits) or max_activations is negative; costs are
// check()ed. Pure; O(policies x ranks x micro-batches x ranks) time.
SearchResult search_schedule(const SearchOptions& options);

}  // namespace dualpipe::sim

#pragma once
// Exact search for small pipelines: branch and bound over every one-stage-per-rank schedule with
// the input/weight gradient split, as the zero-bubble authors' ILP does for ZB. Each rank runs
// its forwards, input-gradient backwards (Bz) and weight gradients (W, FIFO) of the micro-batches
// in order, interleaved in any way, with at most `max_activations` micro-batches in flight
// (forward done, Bz not). The branching generates every active schedule (Giffler and
// Thompson: at each node the rank whose next op can end first, and each of its ops that could
// start before that end), which holds a fastest one; nodes whose lower bound (a rank's
// remaining work after it is free; the dependency chains to every rank's last W) cannot beat
// the best so far are cut. A full backward is a Bz with its W right after, so these schedules
// include 1F1B's, ZB1P's and GPipe's and the list scheduler's on one stage per rank.

#include <optional>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"

namespace dualpipe::sim {

// Up to this many rank micro-batches the planner runs the exact search.
inline constexpr int kExactSearchMostRankMicrobatches = 32;

struct ExactSearchOptions {
  int num_ranks = 1;
  int num_microbatches = 1;
  CostModel costs;
  int max_activations = 0;  // 0: no limit
  // Only schedules strictly faster than this count (the best one known, e.g. the list
  // scheduler's); infinity: any.
  double faster_than = 0;
  // NOTE: about a second here at most (4 x 8 within 3 activations, comm=0.5: 785 935 nodes in
  // 0.4 s).
  long long most_nodes = 2000000;
};

struct ExactSearchResult {
  // The fastest schedule found that is faster than options.faster_than (compute and
  // communication, named "search", validated); empty when none is.
  std::optional<schedule::Schedule> schedule;
  double makespan = 0.0;  // its step time (the simulator's)
  bool complete = false;  // the whole tree was searched: nothing faster exists
  long long nodes = 0;    // nodes visited
};

// Throws std::invalid_argument naming the values for sizes beyond
// kExactSearchMostRankMicrobatches or below 1, or a negative limit; costs are check()ed. Pure;
// time exponential in the sizes, bounded by most_nodes x O(ranks x micro-batches).
ExactSearchResult exact_search(const ExactSearchOptions& options);

}  // namespace dualpipe::sim

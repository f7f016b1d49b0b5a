#pragma once
// A schedule searched for the given costs and activation limit, beyond the fixed families, on one
// of the searched placements (one stage per rank, a V, DualPipe's two directions):
//   1. greedy list scheduling (schedule/list_schedule.h) under every policy (caps, staggering,
//      forward or backward first, F&B pairs, W rules), timed by the walk itself;
//   2. the fixed families on the same placement as further candidates, so the search is never
//      behind them;
//   3. local moves from the best so far: an op moved into an idle gap of the simulated timeline,
//      kept when the schedule stays valid, within the limit and faster (a bounded budget);
//   4. on one stage per rank at small sizes, an exact branch-and-bound search (exact_search.h)
//      that finds a faster schedule or proves there is none.
// The fastest candidate within the limit is the result: an ordinary Schedule (communication
// inserted, validated) named by its placement ("search", "search-v", "search-dual", all
// registered), which `dualpipe plan --save` writes and the simulator, the pictures and the
// executor run like a built one.

#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"

namespace dualpipe::sim {

// The registered names of the searched placements, in the order the planner tries them.
inline constexpr const char* kSearchedScheduleNames[] = {"search", "search-v", "search-dual"};

// Whether `name` is one of kSearchedScheduleNames.
bool is_searched_schedule(const std::string& name);

struct SearchOptions {
  int num_ranks = 1;
  int num_microbatches = 1;
  CostModel costs;
  // Most stage micro-batches in flight per rank (the simulator's peak_activations in this
  // placement's stage units); 0 means no limit.
  int max_activations = 0;
  std::string layout = "search";  // one of kSearchedScheduleNames
  // Fixed families' schedules of these sizes the caller has built already (the planner builds
  // every family): the search takes those on its placement as candidates instead of building
  // them again. Not owned; they must outlive the call. Null: it builds its placement's families.
  const std::vector<const schedule::Schedule*>* built_families = nullptr;
};

struct SearchResult {
  schedule::Schedule schedule;  // validated, named options.layout
  double makespan = 0.0;        // simulated under options.costs
  int peak_activations = 0;     // simulated
  int policies_tried = 0;
  // How the result was found, e.g. "cap=4, backward first, W deferred with lookahead", "v-min's
  // order, then 2 improving move(s)", "exact search, optimal (935 nodes)".
  std::string policy;
};

// The fastest schedule the steps above find within max_activations (ties: the smaller peak).
// Throws std::invalid_argument naming the values when the sizes are out of range
// (check_size_limits) or not accepted by the layout's facts, max_activations is negative or
// the layout unknown; costs are check()ed. When no policy keeps within the limit it returns
// the one with the smallest peak (the caller sees it does not fit). Pure; O(policies x ops x
// ranks) time plus the bounded moves and exact search.
SearchResult search_schedule(const SearchOptions& options);

}  // namespace dualpipe::sim

#pragma once
// Greedy list scheduling on any placement: the builder of the searched schedules ("search",
// "search-v", "search-dual" in the registry; `dualpipe plan` runs it on the user's costs, see
// sim/list_scheduler.h).
//
// One walk under one ListPolicy: always the rank that can act earliest acts next. A rank runs a
// backward when its gradient has arrived, a forward while it holds fewer than `cap` micro-batches
// of its stage instances in flight (forward done, backward not), an F&B pair when a forward and
// a backward of two different stage instances are both ready (if the policy pairs), and pending
// weight gradients (W, FIFO per rank as the executor runs them) in the gaps, by the policy's W
// rule. Micro-batches run in order at every stage instance.
//
// Caps, and why no walk deadlocks: the cap holds a rank's first visit of a micro-batch (the
// first of its stage instances the micro-batch reaches); later visits (a V's way back) always
// run, so the deepest rank always finishes what it admitted and frees the ranks above it. With
// two directions (DualPipe's placement) each direction has its own cap on each rank, so a rank
// full of one direction never blocks the other.

#include <functional>
#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// What the walk times ops with: the rank time of each compute op (F, B or Bz, W, FB) and the
// latency of a p2p item between two ranks.
struct ListCosts {
  std::function<double(const Op&)> op_time;
  double comm = 0.0;
};

struct ListPolicy {
  // Most micro-batches in flight per rank (and per direction with two directions), at first
  // visits; staggered: min(cap, stages from this one to the last), 1F1B's warm-up depth.
  int cap = 1;
  bool staggered = false;
  bool forward_first = false;  // when a forward and a backward are both ready
  bool pair_forward_backward = false;
  bool defer_weight_grad = true;
  // When a pending W runs while no forward or backward is ready:
  //   kLookahead  only where it delays nothing known to arrive within W;
  //   kEager      at once (a W in every gap, as ZB1P's first ranks do);
  //   kLast       only once the rank's backwards are done, except on rank 0, eagerly.
  enum class Weights { kLookahead, kEager, kLast } weights = Weights::kLookahead;

  // "cap=4 staggered, backward first, F&B paired, W deferred with lookahead".
  std::string describe() const;
};

// The policies worth trying on `placement` with `num_microbatches`: every cap from 1 to
// `max_cap` (0: up to what the placement can use), uniform and staggered, forward or backward
// first, paired or not (where a rank holds two stage instances), each W rule, and full
// backwards. Pure.
std::vector<ListPolicy> list_policies(const Placement& placement, int num_microbatches,
                                      int max_cap = 0);

struct ListSchedule {
  Schedule schedule;         // compute and communication (insert_communication), not validated
  double makespan = 0.0;     // the walk's own timing, the simulator's for the same costs
  int peak_activations = 0;  // most stage micro-batches in flight on a rank
};

// One walk of `placement` (num_microbatches in all, split evenly over its directions) under
// `policy`, named `name`; with_communication false leaves the programs compute-only (for
// searches that time many walks and insert communication into the one they keep). Throws
// std::invalid_argument naming the value when the micro-batches do not split over the
// directions, the cap is below 1 or costs.op_time is empty. Pure; O(ranks x stage instances
// per rank) per op.
ListSchedule list_schedule(const std::string& name, const Placement& placement,
                           int num_microbatches, const ListPolicy& policy, const ListCosts& costs,
                           bool with_communication = true);

// The fastest walk over list_policies(placement, num_microbatches) whose peak is at most
// `max_activations` (stage micro-batches per rank), by the walk's own makespan, ties to the
// smaller peak; the registry's "search" builders call it with the default costs. Throws
// std::invalid_argument when no policy fits, naming the limit and the smallest peak found.
ListSchedule fastest_list_schedule(const std::string& name, const Placement& placement,
                                   int num_microbatches, const ListCosts& costs,
                                   int max_activations);

// F=1, B=2 (Bz 1), W=1, F&B 3 (2 with its W deferred), no latency: the registry's costs for
// the searched schedules built without a cost model.
ListCosts default_list_costs();

}  // namespace dualpipe::schedule

namespace dualpipe::schedule {

// The registry's searched schedules, walked on default_list_costs() within the activation
// memory of the family that shares their placement: "search" one stage per rank within 1F1B's
// PP, "search-v" a V within ZB-V's 2PP, "search-dual" DualPipe's two directions within its
// PP+1. `dualpipe plan` searches the same placements on the user's costs and limit instead.
// Throw std::invalid_argument naming the sizes (below 1; odd for search-dual).
Schedule build_search(int num_ranks, int num_microbatches);
Schedule build_search_v(int num_ranks, int num_microbatches);
Schedule build_search_dual(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

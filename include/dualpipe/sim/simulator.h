#pragma once
// Discrete-event simulation of a Schedule under a CostModel: when each compute op runs on each
// rank, how long each rank idles, and how much memory each rank holds.
//
// Execution model (the schedule IR's semantics, with time):
//   - each rank runs its program in order; a compute op starts when the rank is free and its
//     remote inputs have arrived, and occupies the rank for op_cost();
//   - send and receive ops take no rank time; an item sent when the rank reaches the send (the
//     end of the compute before it) arrives at the peer `comm` later; a receive only names the
//     item, the consuming compute op does the waiting;
//   - a forward of (d, s, m) needs the activation of (d, s-1, m), a backward the gradient of
//     (d, s+1, m), an FB both; inputs produced on the same rank are ready by program order.
//
// Bubble of a rank = makespan - busy, where makespan is the end of the last op over all ranks
// and every rank starts at time 0. NOTE: this counts warm-up and cool-down idling on every
// rank, the way the DualPipe paper's bubble table does: with it, 1F1B gives (PP-1)(F+B) on
// every rank and DualPipe (PP/2-1)(F&B+B-3W) on every rank.
//
// The simulation is O(total ops + ranks) time and memory.

#include <vector>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"

namespace dualpipe::sim {

// One compute op as it ran.
struct TimedOp {
  int op_index = -1;  // index into Schedule::programs[rank]
  double start = 0.0;
  double end = 0.0;
};

struct RankResult {
  std::vector<TimedOp> timeline;  // the rank's compute ops, in program (= time) order
  double busy = 0.0;              // sum of compute op durations
  double bubble = 0.0;            // makespan - busy (see the file comment)
  // Most stage-instance micro-batches (direction, stage, microbatch) on this rank whose forward
  // has run and whose backward (B or Bz; the W that may follow does not count) has not, counted
  // between ops in program order. An FB pair is one op: it ends one micro-batch's backward as
  // it ends another's forward, so it leaves the count unchanged. With this count DualPipe peaks
  // at PP+1 on its two middle ranks (PP elsewhere) and DualPipeV at 2*ranks+1 on its last rank,
  // the "activation PP+1" of the DualPipe paper.
  int peak_activations = 0;
  int parameter_copies = 0;  // stage modules the rank holds (Placement::num_slots)
};

struct SimResult {
  double makespan = 0.0;
  std::vector<RankResult> ranks;  // ranks[rank]

  double max_bubble() const;
  int max_peak_activations() const;
  int max_parameter_copies() const;
};

// Simulates `schedule` under `costs` (costs.check()ed; stage_scale, when set, must have one
// entry per stage). The schedule should pass schedule::validate(); this function does not
// repeat those checks but throws std::invalid_argument on what it cannot time (an op naming a
// stage or micro-batch out of range, a compute op whose local input was not produced earlier,
// a compute op on a rank that does not hold its stage) and std::runtime_error naming the blocked
// ranks and ops when the programs deadlock (a rank waits for an item no one ever sends). Pure;
// thread-safe.
SimResult simulate(const schedule::Schedule& schedule, const CostModel& costs);

}  // namespace dualpipe::sim

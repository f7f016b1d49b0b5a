#pragma once
// `dualpipe plan`: every registered schedule family (and the searched placements, see
// list_scheduler.h) at every valid size, simulated on the user's costs, ranked by step time under
// the user's memory limits, with why each loser lost.
//
// Units. Costs are those of one micro-batch of `micro_batch_sizes[0]` samples through one rank's
// share of the model with `pipeline_sizes[0]` ranks; other sizes scale them linearly (a stage of a
// schedule with S stages per direction on R ranks holds R/S of a rank's share; R ranks share the
// model, so a rank's share scales by pipeline_sizes[0]/R; compute and communication scale with
// the micro-batch size). Activation memory is counted the same way: one unit = one reference
// micro-batch through one reference rank share (1F1B on PP ranks peaks at PP units, DualPipe at
// PP+1, DualPipeV's half-size stages at (2*ranks+1)/2). In bytes, a rank holds its peak units
// times activation_bytes plus, for each stage module it holds, that stage's share of
// param_bytes (DualPipe's two copies count twice).

#include <optional>
#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {

struct PlanRequest {
  // Pipeline sizes (ranks per pipeline) to consider; the first is the costs' reference.
  std::vector<int> pipeline_sizes{8};
  // GPUs in all: 0 means one pipeline (data_parallel = 1); else each pipeline size must divide
  // it and data_parallel = gpus / pipeline size.
  int gpus = 0;
  // Micro-batches per step and pipeline to consider (used when global_batch is 0).
  std::vector<int> microbatch_counts{20};
  // Samples per step over all replicas (0: use microbatch_counts); the micro-batch count is then
  // global_batch / (data_parallel * micro-batch size) where that divides.
  int global_batch = 0;
  std::vector<int> micro_batch_sizes{1};  // samples per micro-batch; the first is the reference
  CostModel costs;                        // see Units above; stage_scale has one entry per rank
  // Limits per rank; 0 means none. max_activations in units (above); memory_bytes against
  // activation_bytes * units + parameters.
  double max_activations = 0;
  double memory_bytes = 0;
  double activation_bytes = 0;  // one unit of activations, bytes
  double param_bytes = 0;       // one reference rank share of parameters (+ grads, optimiser)
  std::vector<std::string> schedules;  // families to consider; empty: all registered
  bool search = true;                  // also search each searched placement (list_scheduler.h)
};

struct PlanCandidate {
  std::string schedule;  // a registered name (the searched ones: kSearchedScheduleNames)
  int num_ranks = 0;
  int num_microbatches = 0;
  int micro_batch_size = 0;
  int data_parallel = 1;
  double makespan = 0.0;  // simulated step time (costs' unit)
  double max_bubble = 0.0;
  double max_busy = 0.0;
  int peak_activations = 0;       // the simulator's, in this schedule's stage units
  double activation_units = 0.0;  // the most over ranks, in reference units
  int parameter_copies = 0;       // most stage modules on a rank
  double memory_bytes = 0.0;      // the most over ranks (0 without byte sizes)
  bool fits = true;
  std::string note;  // the searched policy; empty for families
  // Why it is not the winner: "" for the winner, else "memory: ..." or "bubble: ..." / "compute:
  // ..." naming its numbers next to the winner's.
  std::string why;
};

struct Plan {
  std::vector<PlanCandidate> candidates;  // fitting ones by makespan, then the others
  schedule::Schedule winner;              // the first candidate's schedule
  CostModel winner_costs;                 // its scaled costs
  SimResult winner_result;
};

// Plans. Throws std::invalid_argument with one line naming the value for bad input (a negative
// or non-finite cost or limit, a size below 1 or beyond check_size_limits, a pipeline size that
// does not divide gpus, no size that divides the global batch, stage_scale whose length is not
// the pipeline size, an unknown schedule), and when no candidate fits the limits, naming the
// smallest limit that would fit (and with which schedule). Pure; O(candidates x ops).
Plan plan(const PlanRequest& request);

// Scales request.costs (given at the reference sizes) to micro-batches of micro_batch_size
// samples for a schedule with `num_stages` stages per direction (stage_scale then has one entry
// per stage). Only the stage count matters for a stage's share: see Units above.
CostModel scaled_costs(const PlanRequest& request, int micro_batch_size, int num_stages);

}  // namespace dualpipe::sim

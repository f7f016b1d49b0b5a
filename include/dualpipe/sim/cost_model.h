#pragma once
// What each operation costs in the simulator: the DualPipe paper's cost terms. Times are in
// arbitrary units (the paper's F=1 style), never wall-clock seconds.

#include <string>
#include <vector>

#include "dualpipe/schedule/op.h"

namespace dualpipe::sim {

struct CostModel {
  double forward = 1.0;           // F: forward of one stage, one micro-batch
  double backward = 2.0;          // B: full backward (input and weight gradients)
  double weight = 1.0;            // W: deferred weight-gradient work; a Bz costs B - W
  double forward_backward = 3.0;  // FB: one overlapped forward/backward pair ("F&B")
  double comm = 0.0;              // p2p latency: an item sent at t arrives at t + comm
  // Optional per-stage multipliers, indexed by stage number (for DualPipe, by model stage:
  // (0, s) and (1, s) share stage_scale[s]). Empty means all 1. See op_cost() for FB.
  std::vector<double> stage_scale;

  // Throws std::invalid_argument with the values when a cost is negative or not finite, when
  // W > B (a Bz would cost less than zero), or when a stage multiplier is negative.
  void check() const;
};

// Parses "F=1,B=2,W=1,FB=3,comm=0" (any subset, any order; keys F, B, W, FB, comm, and
// scale=<v0>:<v1>:... for stage_scale) over `defaults`, then check()s the result.
// Throws std::invalid_argument naming the malformed piece and what is allowed.
CostModel parse_cost_model(const std::string& text, const CostModel& defaults = CostModel{});

// "F=1,B=2,W=1,FB=3,comm=0" (plus scale=... when set); parse_cost_model() reads it back.
std::string to_string(const CostModel& costs);

// Rank time that compute op `op` takes under `costs`: F, B (or B - W for a deferred backward),
// W, FB (FB - W when its backward half defers weight gradients). Communication ops cost 0.
// With stage multipliers, F/B/W scale by their stage's factor; an FB pair scales by the mean
// of its two halves' factors weighted by F and B, i.e. FB * (F*k_f + B*k_b) / (F + B).
double op_cost(const schedule::Op& op, const CostModel& costs);

}  // namespace dualpipe::sim

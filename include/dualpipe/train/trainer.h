#pragma once
// One rank of `dualpipe train`: builds this rank's model stages, runs the schedule step after
// step, evaluates, checkpoints, and (rank 0) writes the run folder and prints progress.
//
// Every step all ranks allreduce one small vector: each micro-batch's loss (from the ranks
// holding last stages; zeros elsewhere, so the sum is exact) and a stop flag. So every rank sees
// the same losses and the same decision to stop, at the same step boundary.

#include <csignal>
#include <iosfwd>
#include <string>
#include <vector>

#include "dualpipe/runtime/rendezvous.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

// Sees each training step's losses on a rank before the trainer checks them, e.g. for a test to
// make a step diverge.
class StepHook {
 public:
  virtual ~StepHook() = default;
  // Called by train_rank on every rank once per optimiser step `step` (1-based), after the step's
  // backward and before its losses are summed over the ranks and checked: a non-finite one stops
  // the run before the weights change. `losses[i]` is this rank's loss of micro-batch
  // `microbatches[i]` of its EP pipeline (both empty on a rank without a last stage); the hook
  // may change the values, not the number of entries. Must not communicate.
  virtual void before_loss_check(int step, const std::vector<int>& microbatches,
                                 std::vector<double>& losses) = 0;
};

struct RunControl {
  // Continue from the run folder's latest checkpoint (its config hash must match).
  bool resume = false;
  // Set (e.g. by a SIGINT handler) to stop after the current step with a checkpoint.
  const volatile std::sig_atomic_t* stop_requested = nullptr;
  // Called at every step when set; not owned, must outlive train_rank.
  StepHook* step_hook = nullptr;
  // Where rank 0 prints progress and the summary.
  std::ostream* out = nullptr;
};

enum class RunOutcome { kFinished, kStopped, kNonFinite };

struct RunResult {
  RunOutcome outcome = RunOutcome::kFinished;
  int step = 0;         // optimiser steps done (and checkpointed unless kNonFinite)
  std::string message;  // for kNonFinite: which step and micro-batch
};

// Runs training on this rank. Blocking and collective: every rank of context.world calls it with
// the same config (world size = num_ranks * ep). Throws std::invalid_argument for a bad config
// or a checkpoint that does not fit it, std::runtime_error for peer failures.
RunResult train_rank(const TrainConfig& config, runtime::DistributedContext& context,
                     const RunControl& control);

}  // namespace dualpipe::train

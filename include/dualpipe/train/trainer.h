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

#include "dualpipe/runtime/rendezvous.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

struct RunControl {
  // Continue from the run folder's latest checkpoint (its config hash must match).
  bool resume = false;
  // Set (e.g. by a SIGINT handler) to stop after the current step with a checkpoint.
  const volatile std::sig_atomic_t* stop_requested = nullptr;
  // Test hook: make micro-batch 1's loss NaN at this step (0: never).
  int inject_nonfinite_step = 0;
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

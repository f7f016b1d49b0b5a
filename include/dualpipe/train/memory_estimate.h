#pragma once
// How much memory one rank of `dualpipe train` needs, estimated from the config before anything
// is allocated, so a config that cannot fit (`--seq-len 20000`: attention scores grow with
// seq_len^2) is refused with the estimate instead of swapping or being killed.

#include <cstdint>
#include <string>

#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

struct MemoryEstimate {
  // Weights, gradients and the two AdamW moments (1/dp of them with ZeRO-1) of the stages one
  // rank holds (float32).
  double parameter_bytes = 0;
  // Saved activations of the stage micro-batches in flight at the schedule's peak (the
  // simulator's peak activations), attention scores and probabilities included, plus one
  // micro-batch's transient forward.
  double activation_bytes = 0;
  int peak_activations = 0;  // stage x micro-batch units at the peak
  double total() const { return parameter_bytes + activation_bytes; }
};

// An upper-end estimate for one rank (the busiest one). Pure; `config` must pass validate().
MemoryEstimate estimate_rank_memory(const TrainConfig& config);

// MemAvailable from /proc/meminfo, or physical memory when that cannot be read; 0 if neither.
std::uint64_t available_memory_bytes();

// Throws std::invalid_argument when num_ranks * ep * dp ranks of estimate_rank_memory() exceed
// `available_bytes`, naming seq_len, microbatch_size, the estimate and the largest seq_len that
// would fit. Does nothing when available_bytes is 0 (unknown).
void check_memory_fits(const TrainConfig& config, std::uint64_t available_bytes);

}  // namespace dualpipe::train

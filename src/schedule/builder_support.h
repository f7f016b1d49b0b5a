#pragma once
// Private helpers shared by the schedule builders.

#include <stdexcept>
#include <string>

namespace dualpipe::schedule::detail {

// The single-direction baselines (1F1B, GPipe, ZB1P) accept any num_ranks >= 1 and
// num_microbatches >= 1; fewer micro-batches than ranks is legal, just bubbly.
inline void check_sizes_at_least_one(const char* schedule, int num_ranks, int num_microbatches) {
  if (num_ranks < 1 || num_microbatches < 1) {
    throw std::invalid_argument(
        std::string(schedule) + " needs num_ranks >= 1 and num_microbatches >= 1, got num_ranks=" +
        std::to_string(num_ranks) + ", num_microbatches=" + std::to_string(num_microbatches));
  }
}

}  // namespace dualpipe::schedule::detail

#include "dualpipe/schedule/one_f_one_b.h"

#include <algorithm>

#include "builder_support.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {

Schedule build_1f1b(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("1F1B", num_ranks, num_microbatches);
  Schedule schedule{"1f1b", num_microbatches, Placement::round_robin(num_ranks, num_ranks), {}};
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    Program& program = schedule.programs[rank];
    const int stage = rank;
    // Warm-up: enough forwards in flight that the first backward arrives just in time.
    const int warmup = std::min(num_ranks - 1 - rank, num_microbatches);
    for (int m = 0; m < warmup; ++m) program.push_back(Op::forward(0, stage, m));
    // Steady state: one forward, one backward.
    for (int m = warmup; m < num_microbatches; ++m) {
      program.push_back(Op::forward(0, stage, m));
      program.push_back(Op::backward(0, stage, m - warmup));
    }
    // Cool-down: the backwards of the warm-up forwards.
    for (int m = num_microbatches - warmup; m < num_microbatches; ++m) {
      program.push_back(Op::backward(0, stage, m));
    }
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

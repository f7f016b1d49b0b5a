#include "dualpipe/schedule/zero_bubble.h"

#include <algorithm>

#include "builder_support.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {

// NOTE: rank r keeps up to r weight-gradient ops pending. The gradients travel up the pipeline
// on the critical path, so the ranks near the end run Bz and postpone W (their input gradient
// leaves one W earlier per hop) and catch up on W's at the end, when the ranks above are still
// busy with their cool-down; rank 0, at the end of the gradient path, runs W at once. With
// unit F = Bz = W every rank then idles exactly R-1 units = (R-1)(F+B-2W), as in the paper
// (1F1B idles 3(R-1)). R=4, M=6:
//
//   rank 0: F0 F1 F2 F3 Bz0 W0 F4 Bz1 W1 F5 Bz2 W2 Bz3 W3 Bz4 W4 Bz5 W5
//   rank 1: F0 F1 F2 Bz0 F3 Bz1 W0 F4 Bz2 W1 F5 Bz3 W2 Bz4 W3 Bz5 W4 W5
//   rank 2: F0 F1 Bz0 F2 Bz1 F3 Bz2 W0 F4 Bz3 W1 F5 Bz4 W2 Bz5 W3 W4 W5
//   rank 3: F0 Bz0 F1 Bz1 F2 Bz2 F3 Bz3 W0 F4 Bz4 W1 F5 Bz5 W2 W3 W4 W5
Schedule build_zb1p(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("ZB1P", num_ranks, num_microbatches);
  Schedule schedule{"zb1p", num_microbatches, Placement::round_robin(num_ranks, num_ranks), {}};
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    Program& program = schedule.programs[rank];
    const int stage = rank;
    const int max_pending_weights = rank;
    int num_backward = 0;
    int num_weight = 0;
    auto backward = [&](int m) {
      program.push_back(Op::backward(0, stage, m, /*defer_weight_grad=*/true));
      ++num_backward;
      if (num_backward - num_weight > max_pending_weights) {
        program.push_back(Op::weight(0, stage, num_weight++));
      }
    };
    const int warmup = std::min(num_ranks - 1 - rank, num_microbatches);
    for (int m = 0; m < warmup; ++m) program.push_back(Op::forward(0, stage, m));
    for (int m = warmup; m < num_microbatches; ++m) {
      program.push_back(Op::forward(0, stage, m));
      backward(m - warmup);
    }
    for (int m = num_microbatches - warmup; m < num_microbatches; ++m) backward(m);
    while (num_weight < num_microbatches) program.push_back(Op::weight(0, stage, num_weight++));
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

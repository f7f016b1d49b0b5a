#include "dualpipe/schedule/interleaved_1f1b.h"

#include <algorithm>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {
namespace {

// One rank's program. The ops are numbered as PyTorch numbers them: op k < warmup is a forward,
// then each op is a forward and a backward, and the last `warmup` ops backwards only. Forward
// number k runs on the rank's local stage (k / Mr) % v; backward number k (counted from the
// first backward) on local stage v-1 - (k / Mr) % v, so the backwards walk the loop in reverse.
//
//   R=2, M=4, v=2 (Mr=2), stages 0,2 on rank 0 and 1,3 on rank 1:
//   rank 0: F0.0 F0.1 F2.0 F2.1 F0.2 B2.0 F0.3 B2.1 F2.2 B0.0 F2.3 B0.1 B2.2 B2.3 B0.2 B0.3
//   rank 1: F1.0 F1.1 F3.0 B3.0 F3.1 B3.1 F1.2 B1.0 F1.3 B1.1 F3.2 B3.2 F3.3 B3.3 B1.2 B1.3
//   (Fs.m: forward of stage s, micro-batch m)
Program rank_program(int num_ranks, int num_microbatches, int stages_per_rank, int rank) {
  const int v = stages_per_rank;
  const int rounds = std::max(1, num_microbatches / num_ranks);
  const int per_round = num_microbatches / rounds;
  const int total = v * num_microbatches;  // forwards (and backwards) on this rank
  const int warmup = std::min((v - 1) * per_round + 2 * (num_ranks - 1 - rank), total);
  auto forward_stage = [&](int k) { return (k / per_round) % v * num_ranks + rank; };
  auto backward_stage = [&](int k) { return (v - 1 - (k / per_round) % v) * num_ranks + rank; };
  std::vector<int> next_forward(v, 0), next_backward(v, 0);
  Program program;
  program.reserve(2 * total);
  auto forward = [&](int k) {
    const int stage = forward_stage(k);
    program.push_back(Op::forward(0, stage, next_forward[stage / num_ranks]++));
  };
  auto backward = [&](int k) {
    const int stage = backward_stage(k);
    program.push_back(Op::backward(0, stage, next_backward[stage / num_ranks]++));
  };
  for (int k = 0; k < warmup; ++k) forward(k);
  // Steady state: one forward, one backward.
  for (int k = warmup; k < total; ++k) {
    forward(k);
    backward(k - warmup);
  }
  // Cool-down: the backwards of the warm-up forwards.
  for (int k = total - warmup; k < total; ++k) backward(k);
  return program;
}

}  // namespace

Schedule build_interleaved_1f1b(int num_ranks, int num_microbatches, int stages_per_rank) {
  DUALPIPE_CHECK(num_ranks >= 1 && num_microbatches >= 1 && stages_per_rank >= 1,
                 "interleaved 1F1B needs num_ranks >= 1, num_microbatches >= 1 and "
                 "stages_per_rank >= 1, got num_ranks=",
                 num_ranks, ", num_microbatches=", num_microbatches,
                 ", stages_per_rank=", stages_per_rank);
  const int rounds = std::max(1, num_microbatches / num_ranks);
  DUALPIPE_CHECK(num_microbatches % rounds == 0,
                 "interleaved 1F1B runs the micro-batches in max(1, num_microbatches / num_ranks) "
                 "rounds of equal size, got num_ranks=",
                 num_ranks, ", num_microbatches=", num_microbatches, " (", rounds, " rounds)");
  Schedule schedule{"interleaved-1f1b",
                    num_microbatches,
                    Placement::round_robin(num_ranks, num_ranks * stages_per_rank),
                    {}};
  for (int rank = 0; rank < num_ranks; ++rank) {
    schedule.programs.push_back(rank_program(num_ranks, num_microbatches, stages_per_rank, rank));
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

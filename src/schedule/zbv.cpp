#include "dualpipe/schedule/zbv.h"

#include <algorithm>

#include "builder_support.h"
#include "dualpipe/schedule/communication.h"
#include "phase_program.h"

namespace dualpipe::schedule {
namespace {

// Phase 0 is the way down (stage r), phase 1 the way back (stage 2R-1-r), as in PhaseProgram.
// NOTE: phases are the reference's "chunk 0" and "chunk 1".
Program rank_program(int num_ranks, int num_microbatches, int rank) {
  const int padded = std::max(2 * num_ranks - 1, num_microbatches);
  Program program;
  detail::PhaseProgram p(program, {0, rank}, {0, 2 * num_ranks - 1 - rank});
  constexpr bool kDefer = true;
  int forwards[2] = {0, 0};
  auto forward = [&](int phase) {
    p.forward(phase);
    ++forwards[phase];
  };

  // Warm-up: forwards of the way down, then alternate with the way back, then start the
  // backwards where the V turns.
  for (int i = 0; i < 2 * (num_ranks - rank) - 1; ++i) forward(0);
  for (int i = 0; i < rank; ++i) {
    forward(1);
    forward(0);
  }
  for (int i = 0; i < num_ranks - rank; ++i) {
    forward(1);
    p.backward(1, kDefer);
    p.weight();
  }
  // Steady state: F0 B0 W F1 B1 W.
  while (forwards[1] < forwards[0] || forwards[0] < padded) {
    if (forwards[0] < padded) forward(0);
    p.backward(0, kDefer);
    p.weight();
    forward(1);
    p.backward(1, kDefer);
    p.weight();
  }
  // Cool-down: the remaining backwards, W's filling the gaps, then the remaining W's.
  for (int i = 0; i < rank; ++i) {
    p.backward(0, kDefer);
    p.backward(1, kDefer);
  }
  for (int i = 0; i < num_ranks - rank; ++i) {
    p.backward(0, kDefer);
    p.weight();
  }
  while (p.has_deferred_weights()) p.weight();

  // The padding micro-batches go, with every op of theirs.
  program.erase(std::remove_if(program.begin(), program.end(),
                               [&](const Op& op) { return op.microbatch >= num_microbatches; }),
                program.end());
  return program;
}

}  // namespace

Schedule build_zbv(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("ZB-V", num_ranks, num_microbatches);
  Schedule schedule{"zbv", num_microbatches, Placement::v_shape(num_ranks), {}};
  for (int rank = 0; rank < num_ranks; ++rank) {
    schedule.programs.push_back(rank_program(num_ranks, num_microbatches, rank));
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

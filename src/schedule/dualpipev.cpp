#include "dualpipe/schedule/dualpipev.h"

#include <stdexcept>
#include <string>

#include "dualpipe/schedule/communication.h"
#include "phase_program.h"

namespace dualpipe::schedule {

// NOTE: the step list is DualPipe's with the whole pipeline in place of one half: rank for
// half_rank, num_ranks for num_half_ranks, num_microbatches for half_num_chunks and the last
// rank (where the V turns) for the middle rank. Phase 0 is the way down (stage r), phase 1 the
// way back (stage 2R-1-r); every micro-batch enters at rank 0 and takes both.
// NOTE: one long body on purpose (~75 lines): its eight steps are the reference's
// DualPipeV.step, transcribed step for step so the two read side by side.
Schedule build_dualpipev(int num_ranks, int num_microbatches) {
  if (num_ranks < 1 || num_microbatches < 2 * num_ranks) {
    throw std::invalid_argument(
        "DualPipeV needs num_ranks >= 1 and num_microbatches >= 2*num_ranks, got num_ranks=" +
        std::to_string(num_ranks) + ", num_microbatches=" + std::to_string(num_microbatches));
  }
  Schedule schedule{"dualpipev", num_microbatches, Placement::v_shape(num_ranks), {}};
  schedule.programs.resize(num_ranks);
  for (Program& program : schedule.programs) program.reserve(num_microbatches * 4);

  for (int rank = 0; rank < num_ranks; ++rank) {
    const bool is_last_rank = rank == num_ranks - 1;
    detail::PhaseProgram p(schedule.programs[rank], {0, rank}, {0, 2 * num_ranks - 1 - rank});

    // Step 1: nF0
    const int step_1 = (num_ranks - rank - 1) * 2;
    for (int i = 0; i < step_1; ++i) p.forward(0);

    // Step 2: nF0F1
    const int step_2 = rank + 1;
    for (int i = 0; i < step_2; ++i) {
      p.forward(0);
      p.forward(1);
    }

    // Step 3: nB1W1F1 (zero bubble)
    const int step_3 = num_ranks - rank - 1;
    for (int i = 0; i < step_3; ++i) {
      p.backward(1, /*zero_bubble=*/true);
      p.weight();
      p.forward(1);
    }

    // Step 4 (main step): nF0B1F1B0
    const int step_4 = num_microbatches - num_ranks * 2 + rank + 1;
    for (int i = 0; i < step_4; ++i) {
      if (i == 0 && is_last_rank) {
        // NOTE: not overlapped in the reference, to further reduce the bubble.
        p.forward(0);
        p.backward(1);
      } else {
        p.forward_backward(0, 1);
      }
      p.forward_backward(1, 0);
    }

    // Step 5: nB1F1B0
    const int step_5 = num_ranks - rank - 1;
    for (int i = 0; i < step_5; ++i) {
      p.backward(1);
      p.forward_backward(1, 0);
    }

    // Step 6: nB1B0 (the second half of these backwards defer their weight gradients)
    const int step_6 = rank + 1;
    bool zero_bubble = false;
    for (int i = 0; i < step_6; ++i) {
      if (i == step_6 / 2 && rank % 2 == 1) zero_bubble = true;
      p.backward(1, zero_bubble);
      if (i == step_6 / 2 && rank % 2 == 0) zero_bubble = true;
      p.backward(0, zero_bubble);
    }

    // Step 7: nWB0 (zero bubble)
    const int step_7 = num_ranks - rank - 1;
    for (int i = 0; i < step_7; ++i) {
      p.weight();
      p.backward(0, /*zero_bubble=*/true);
    }

    // Step 8: nW
    const int step_8 = rank + 1;
    for (int i = 0; i < step_8; ++i) p.weight();
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

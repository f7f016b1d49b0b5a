#include "dualpipe/schedule/dualpipe.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "dualpipe/schedule/communication.h"
#include "phase_program.h"

namespace dualpipe::schedule {

// NOTE: one long body on purpose (~90 lines): its eight steps are the reference's DualPipe.step
// (deepseek-ai/DualPipe), transcribed step for step so the two read side by side; the recorded
// reference orders in tests/data/reference-order check it op for op.
Schedule build_dualpipe(int num_ranks, int num_microbatches) {
  if (num_ranks < 2 || num_ranks % 2 != 0 || num_microbatches % 2 != 0 ||
      num_microbatches < 2 * num_ranks) {
    throw std::invalid_argument(
        "DualPipe needs an even number of ranks and an even num_microbatches >= 2*num_ranks, "
        "got num_ranks=" +
        std::to_string(num_ranks) + ", num_microbatches=" + std::to_string(num_microbatches));
  }
  Schedule schedule{"dualpipe", num_microbatches, Placement::bidirectional(num_ranks), {}};
  schedule.programs.resize(num_ranks);
  for (Program& program : schedule.programs) program.reserve(num_microbatches * 3);

  const int num_half_ranks = num_ranks / 2;
  const int half_num_chunks = num_microbatches / 2;
  for (int rank = 0; rank < num_ranks; ++rank) {
    const int half_rank = std::min(rank, num_ranks - 1 - rank);
    const bool is_middle_rank = half_rank == num_half_ranks - 1;
    // Local phase 0 is the direction that enters on this rank's side of the pipeline: direction
    // 0 for the first half of the ranks, direction 1 for the second half.
    const detail::PhaseProgram::Phase down{0, rank};
    const detail::PhaseProgram::Phase up{1, num_ranks - 1 - rank};
    const bool second_half = rank >= num_half_ranks;
    detail::PhaseProgram p(schedule.programs[rank], second_half ? up : down,
                           second_half ? down : up);

    // Step 1: nF0
    const int step_1 = (num_half_ranks - half_rank - 1) * 2;
    for (int i = 0; i < step_1; ++i) p.forward(0);

    // Step 2: nF0F1
    const int step_2 = half_rank + 1;
    for (int i = 0; i < step_2; ++i) {
      p.forward(0);
      p.forward(1);
    }

    // Step 3: nB1W1F1 (zero bubble: the weight gradient right after, to shorten the gradient's
    // path to the other half)
    const int step_3 = num_half_ranks - half_rank - 1;
    for (int i = 0; i < step_3; ++i) {
      p.backward(1, /*zero_bubble=*/true);
      p.weight();
      p.forward(1);
    }

    // Step 4 (main step): nF0B1F1B0
    const int step_4 = half_num_chunks - num_ranks + half_rank + 1;
    for (int i = 0; i < step_4; ++i) {
      if (i == 0 && is_middle_rank) {
        // NOTE: the reference does not overlap these two chunks, to further reduce the bubble:
        // the middle ranks' first backward is on the critical path of both directions.
        p.forward(0);
        p.backward(1);
      } else {
        p.forward_backward(0, 1);
      }
      p.forward_backward(1, 0);
    }

    // Step 5: nB1F1B0
    const int step_5 = num_half_ranks - half_rank - 1;
    for (int i = 0; i < step_5; ++i) {
      p.backward(1);
      p.forward_backward(1, 0);
    }

    // Step 6: nB1B0 (the second half of these backwards defer their weight gradients)
    const int step_6 = half_rank + 1;
    bool zero_bubble = false;
    for (int i = 0; i < step_6; ++i) {
      if (i == step_6 / 2 && half_rank % 2 == 1) zero_bubble = true;
      p.backward(1, zero_bubble);
      if (i == step_6 / 2 && half_rank % 2 == 0) zero_bubble = true;
      p.backward(0, zero_bubble);
    }

    // Step 7: nWB0 (zero bubble)
    const int step_7 = num_half_ranks - half_rank - 1;
    for (int i = 0; i < step_7; ++i) {
      p.weight();
      p.backward(0, /*zero_bubble=*/true);
    }

    // Step 8: nW
    const int step_8 = half_rank + 1;
    for (int i = 0; i < step_8; ++i) p.weight();
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

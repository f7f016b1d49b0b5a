#pragma once
// The controllable-memory V schedules ("Pipeline Parallelism with Controllable Memory", Qi et al.
// 2024, arXiv 2405.15362; the authors' zbv_greedy.py): two stages per rank in a V
// (Placement::v_shape(R)), every backward split into Bz and a deferred W, built by repeating a
// building block whose lifespan sets the peak activation memory, then squeezing it greedily
// without raising that peak:
//   - V-Half: about 1/2 of 1F1B's activation memory, (R+2)/2 micro-batches of a rank's layers
//     in the paper (R+2 or so of our half-size stages);
//   - V-Min: about 1/3, (R+4)/3 micro-batches in the paper, at the price of some bubble.
// The paper counts an activation until its W; see the tests and docs/sim.md for both counts.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// The authors' order for every rank (pattern, squeeze with W, squeeze without W, W's into the
// free slots; the same F, B and W slots as their zbv_greedy.py for 1..8 ranks), except that each W
// runs the oldest pending Bz's weight gradients (the executor's queue is FIFO; the authors pick a
// chunk), plus communication (see communication.h). Pure function. Throws std::invalid_argument
// with the values unless num_ranks >= 1 and num_microbatches >= 1.
Schedule build_v_half(int num_ranks, int num_microbatches);
Schedule build_v_min(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

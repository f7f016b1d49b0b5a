#pragma once
// The generic communication pass. Builders describe only WHAT each rank computes and in which
// order; this pass derives the sends and receives from the placement, so every schedule
// (DualPipe, DualPipeV, 1F1B, ZB1P, GPipe, and later interleaved 1F1B or ZB-V) gets the same,
// provably FIFO-matched communication.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// Rewrites `schedule.programs` (compute ops only on entry) into full programs:
//   - a send right after the compute op that produces the item: the output activation of
//     (d, s, m) after its forward (F or the forward half of FB) when (d, s+1) lives on another
//     rank; the input gradient of (d, s, m) after its backward (B, Bz or the backward half of
//     FB) when (d, s-1) lives on another rank. FB sends its activation before its gradient.
//   - on the receiving rank, the receives from each peer in the SENDER's order (one FIFO
//     channel per ordered rank pair, as NCCL needs), each placed just before the earliest
//     consumer among it and all later items of its channel: as early as correctness needs,
//     never out of channel order. Receives that land before the same compute op are ordered by
//     peer, then channel order.
//   - nothing where producer and consumer share a rank (DualPipeV's last rank).
// Runs in time linear in the number of ops (plus the number of stage instances times
// micro-batches). Throws std::invalid_argument, naming rank, op index and op, when a program
// already holds a communication op or an op names a stage instance that is not on its rank.
void insert_communication(Schedule& schedule);

}  // namespace dualpipe::schedule

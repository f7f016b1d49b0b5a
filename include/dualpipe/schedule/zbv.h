#pragma once
// ZB-V ("Zero Bubble Pipeline Parallelism", Qi et al. 2024, section 6; PyTorch's
// ScheduleZBVZeroBubble): two stages per rank in a V (Placement::v_shape(R): stage r on the way
// down, 2R-1-r on the way back), every backward split into its input-gradient part (Bz) and a
// deferred weight-gradient part (W). With F = Bz = W (F=1, B=2, W=1 here: a Bz costs B - W) the
// paper's "zero bubble": every rank idles only the start-up, (R-1)F (r forwards before its first
// input, R-1-r at the end), whatever the number of micro-batches, against 1F1B's (R-1)(F+B) for
// stages twice as large. Peak activations: 2R stages x micro-batches on every rank, 1F1B's R.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// PyTorch's compute order for every rank (the same F, B and W slots, checked against
// torch.distributed.pipelining for 1..8 ranks), except that each W runs the oldest pending Bz's
// weight gradients (the executor's queue is FIFO; PyTorch names a chunk), plus communication
// (see communication.h). Fewer than 2R-1 micro-batches: the order of 2R-1 without the missing
// micro-batches' ops, as PyTorch does. Pure function. Throws std::invalid_argument with the
// values unless num_ranks >= 1 and num_microbatches >= 1.
Schedule build_zbv(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

#pragma once
// Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM's virtual pipeline; PyTorch's
// ScheduleInterleaved1F1B): each rank holds v stages in a loop placement, stage s on rank
// s % R (Placement::round_robin(R, v*R)), so a micro-batch passes every rank v times. The
// micro-batches go in rounds of Mr = M / max(1, M / R) (R when R divides M): a rank runs Mr of
// them through one of its stages, then the same Mr through its next stage ("depth first"),
// warms up with (v-1)*Mr + 2*(R-1-r) forwards, then alternates one forward and one backward.
// With costs F, B per stage the bubble is (R-1)(F+B) per rank: the rank's layers cost v*F and
// v*B, so 1/v of 1F1B's (R-1)(vF+vB).

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// PyTorch's compute order for every rank (without its alignment no-ops; checked against
// torch.distributed.pipelining for 1..8 ranks, v = 1..4), plus communication
// (see communication.h). Pure function. Throws std::invalid_argument with the values unless
// num_ranks >= 1, num_microbatches >= 1, stages_per_rank >= 1 and num_microbatches is a
// multiple of its rounds max(1, num_microbatches / num_ranks).
Schedule build_interleaved_1f1b(int num_ranks, int num_microbatches, int stages_per_rank);

}  // namespace dualpipe::schedule

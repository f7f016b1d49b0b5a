#pragma once
// 1F1B (PipeDream-Flush): rank r runs min(R-1-r, M) warm-up forwards, then alternates one forward
// and one full backward, then drains the remaining backwards. One stage per rank (round_robin(R,
// R)).

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// Compute order and communication (see communication.h) for num_ranks ranks and
// num_microbatches micro-batches. Pure function. Throws std::invalid_argument with the values
// unless num_ranks >= 1 and num_microbatches >= 1.
Schedule build_1f1b(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

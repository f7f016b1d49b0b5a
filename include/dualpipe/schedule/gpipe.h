#pragma once
// GPipe: every rank runs all forwards, then all backwards (micro-batch order). One stage per
// rank. Peak activation memory is all M micro-batches; kept as the simplest baseline.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// Compute order and communication (see communication.h) for num_ranks ranks and
// num_microbatches micro-batches. Pure function. Throws std::invalid_argument with the values
// unless num_ranks >= 1 and num_microbatches >= 1.
Schedule build_gpipe(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

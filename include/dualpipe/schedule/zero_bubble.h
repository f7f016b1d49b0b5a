#pragma once
// ZB1P (ZB-H1 of "Zero Bubble Pipeline Parallelism", Qi et al. 2023): 1F1B with the backward
// split into the input-gradient part (Bz) and a deferred weight-gradient part (W). Rank r keeps
// up to r W's pending, so gradients reach the first rank at Bz speed and W's fill the bubbles: with
// F = Bz = W the pipeline idles (R-1)(F+B-2W) per rank instead of 1F1B's (R-1)(F+B), at 1F1B's
// activation memory.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// Compute order and communication (see communication.h) for num_ranks ranks and
// num_microbatches micro-batches. Pure function. Throws std::invalid_argument with the values
// unless num_ranks >= 1 and num_microbatches >= 1.
Schedule build_zb1p(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

#pragma once
// DualPipe (DeepSeek-V3 technical report; deepseek-ai/DualPipe `DualPipe.step()`): two pipelines
// run in opposite directions over the same model stages, so that in the steady state every rank
// overlaps the forward of one direction with the backward of the other (FB ops).
// Placement::bidirectional(R): rank r holds (0, r) in slot 0 and (1, R-1-r) in slot 1.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// The reference's compute order on every rank (exactly; tested against its recorded order),
// plus communication from insert_communication(). num_microbatches is the total over both
// directions: each direction gets num_microbatches/2. Pure function. Throws
// std::invalid_argument with the values unless num_ranks is even and >= 2 and
// num_microbatches is even and >= 2*num_ranks.
Schedule build_dualpipe(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

#pragma once
// DualPipeV ("cut-in-half" DualPipe; deepseek-ai/DualPipe `DualPipeV.step()`): one direction of
// 2R stages folded into a V, so each rank holds two stages (Placement::v_shape(R)) and the
// micro-batches' forwards on the way back overlap backwards on the way down.

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// The reference's compute order on every rank (exactly; tested against its recorded order),
// plus communication from insert_communication(). Pure function. Throws std::invalid_argument
// with the values unless num_ranks >= 1 and num_microbatches >= 2*num_ranks.
Schedule build_dualpipev(int num_ranks, int num_microbatches);

}  // namespace dualpipe::schedule

#pragma once
// Single-process reference training: the same model stages, data, criterion and optimiser as
// `dualpipe train`, run one micro-batch at a time through every stage with no pipeline, no
// executor and no communication. The correctness test compares a pipelined run with it.
//
// NOTE: float addition is not associative, so "the same gradients" needs the same summation
// order. A DualPipe rank accumulates a stage's gradient over one direction's micro-batches (in
// micro-batch order) and then adds its mirror's sum for the other direction; the reference
// accumulates the two halves of the batch separately and adds them the same way. One-direction
// schedules accumulate in micro-batch order, as the reference does for them.

#include <vector>

#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

struct ReferenceResult {
  std::vector<double> losses;  // per step, summed over micro-batches (and EP pipelines) in order
  NamedTensors parameters;     // "stage<s>.<name>" after the last step
};

// Trains config.steps steps in this process on the job's global batch: ep pipelines' batches of
// num_microbatches x microbatch_size sequences each (config.dp does not change it), the EP
// pipelines' micro-batches one after the other, with dense experts. With ep = 1 and dp = 1 the
// arithmetic is the pipeline's, in its order; otherwise the sums over EP and DP ranks group the
// same terms differently (see the tests' tolerances).
ReferenceResult train_reference(const TrainConfig& config);

}  // namespace dualpipe::train

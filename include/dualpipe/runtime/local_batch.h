#pragma once
// Splitting a global batch into what each pipeline rank passes to Pipeline::step.

#include <string>
#include <vector>

#include "dualpipe/runtime/stage_module.h"
#include "dualpipe/schedule/placement.h"

namespace dualpipe::runtime {

// One rank's share of a global batch. A global batch holds num_microbatches equal micro-batches
// along dim 0, direction by direction: direction d's micro-batch m is global micro-batch
// d * (num_microbatches / num_directions) + m (DualPipe: the first half of the batch enters at
// rank 0, the second half at rank R-1; single-direction schedules: all of it at rank 0).
struct LocalBatch {
  // The rows of the directions whose first stage is on this rank (in direction order); empty
  // when the rank holds no first stage. Pass as step()'s `inputs`.
  TensorList inputs;
  // The rows of the directions whose last stage is on this rank; empty when it holds none (or
  // no labels were given). Pass as step()'s `labels`. DualPipe's labels are crossed: rank 0 holds
  // the second half's labels, rank R-1 the first half's.
  TensorList labels;
  // The global micro-batch index of each entry of StepResult::loss on this rank.
  std::vector<int> loss_microbatches;
};

// This rank's share of the global `inputs` and `labels` (each tensor split along dim 0). Pure and
// local (no communication); the result holds views of the given tensors where one direction
// starts or ends on the rank and a concatenated copy where several do. Every rank may call it
// with the same global batch (e.g. from a shared seed). Throws std::invalid_argument naming the
// tensor and its size when a batch does not split into num_microbatches equal micro-batches, or
// when num_microbatches is not a positive multiple of the number of directions.
LocalBatch local_batch(const schedule::Placement& placement, int rank, int num_microbatches,
                       const TensorList& inputs, const TensorList& labels = {});

// Same, for schedule `schedule_name` on `num_ranks` ranks (see Pipeline::stages_for).
LocalBatch local_batch(const std::string& schedule_name, int num_ranks, int rank,
                       int num_microbatches, const TensorList& inputs,
                       const TensorList& labels = {});

}  // namespace dualpipe::runtime

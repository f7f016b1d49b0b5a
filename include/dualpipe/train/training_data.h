#pragma once
// What one training run reads: the corpus split, the training-window stream, the fixed held-out
// windows, and how a step's batch maps onto the micro-batches of a pipeline schedule.

#include <ATen/Tensor.h>

#include <vector>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/train/corpus.h"
#include "dualpipe/train/data_loader.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

struct TrainingData {
  CorpusSplit split;
  double unigram_loss = 0.0;  // entropy of the training bytes (nats/byte)
  DataLoader loader;          // training windows
  at::Tensor held_out;        // [eval rows, seq_len + 1]: eval_microbatch_size rows per micro-batch
};

// Loads config.data (or the fortunes corpus), splits it and makes the loader (seed = config.seed).
// Throws std::invalid_argument as load_corpus / split_corpus / DataLoader do.
TrainingData load_training_data(const TrainConfig& config);

// Held-out sequences per micro-batch: ceil(eval_windows / num_microbatches).
int64_t eval_microbatch_size(const TrainConfig& config);

// Which rows of a step's batch a pipeline rank feeds in and which labels it holds: directions
// whose first (last) stage is on `rank`, in direction order; direction d's micro-batch m is
// global micro-batch d * per_direction + m, rows [global * rows, (global + 1) * rows).
struct RankBatch {
  at::Tensor inputs;                   // undefined when the rank holds no first stage
  at::Tensor labels;                   // undefined when the rank holds no last stage
  std::vector<int> loss_microbatches;  // global micro-batch index of each StepResult::loss entry
};
RankBatch rank_batch(const schedule::Schedule& schedule, int rank, const at::Tensor& windows);

}  // namespace dualpipe::train

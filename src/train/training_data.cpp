#include "dualpipe/train/training_data.h"

#include <ATen/ATen.h>

namespace dualpipe::train {

TrainingData load_training_data(const TrainConfig& config) {
  const Corpus corpus = load_corpus(config.data.empty() ? kDefaultCorpusPath : config.data,
                                    static_cast<std::size_t>(4 * (config.seq_len + 1)));
  // NOTE: blocks of 8 windows keep held-out text contiguous yet spread over the whole corpus.
  const std::size_t block = std::max<std::size_t>(4096, 8 * (config.seq_len + 1));
  CorpusSplit split = split_corpus(corpus.bytes, std::min(block, corpus.bytes.size() / 4), 10);
  const double unigram = unigram_loss(split.train);
  DataLoader loader(split.train, config.seq_len, config.seed);
  at::Tensor held_out = evenly_spaced_windows(
      split.held_out, config.seq_len, eval_microbatch_size(config) * config.num_microbatches);
  return TrainingData{std::move(split), unigram, std::move(loader), held_out};
}

int64_t eval_microbatch_size(const TrainConfig& config) {
  return (config.eval_windows + config.num_microbatches - 1) / config.num_microbatches;
}

RankBatch rank_batch(const schedule::Schedule& schedule, int rank, const at::Tensor& windows) {
  const schedule::Placement& placement = schedule.placement;
  const int per_direction = schedule.microbatches_per_direction();
  const int64_t rows = windows.size(0) / schedule.num_microbatches;
  const int64_t seq_len = windows.size(1) - 1;
  const int last = schedule.num_stages() - 1;
  auto rows_of = [&](int d) {
    return windows.narrow(0, d * per_direction * rows, per_direction * rows);
  };
  std::vector<at::Tensor> inputs, labels;
  RankBatch batch;
  for (int d = 0; d < schedule.num_directions(); ++d) {
    if (placement.rank_of(d, 0) == rank) inputs.push_back(rows_of(d).narrow(1, 0, seq_len));
    if (placement.rank_of(d, last) == rank) {
      labels.push_back(rows_of(d).narrow(1, 1, seq_len));
      for (int m = 0; m < per_direction; ++m)
        batch.loss_microbatches.push_back(d * per_direction + m);
    }
  }
  if (!inputs.empty()) batch.inputs = at::cat(inputs, 0).contiguous();
  if (!labels.empty()) batch.labels = at::cat(labels, 0).contiguous();
  return batch;
}

}  // namespace dualpipe::train

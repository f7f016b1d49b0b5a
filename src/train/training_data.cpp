#include "dualpipe/train/training_data.h"

#include <ATen/ATen.h>

#include "dualpipe/runtime/local_batch.h"

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
  const int64_t seq_len = windows.size(1) - 1;
  runtime::LocalBatch local =
      runtime::local_batch(schedule.placement, rank, schedule.num_microbatches,
                           {windows.narrow(1, 0, seq_len)}, {windows.narrow(1, 1, seq_len)});
  RankBatch batch;
  if (!local.inputs.empty()) batch.inputs = local.inputs[0].contiguous();
  if (!local.labels.empty()) batch.labels = local.labels[0].contiguous();
  batch.loss_microbatches = std::move(local.loss_microbatches);
  return batch;
}

}  // namespace dualpipe::train

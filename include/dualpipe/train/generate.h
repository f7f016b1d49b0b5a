#pragma once
// Sampling text from a trained run in one process: every model stage is loaded from the run's
// latest checkpoint (whichever rank file holds it) and the stages are run one after the other.

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/moe/moe_stage.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

struct LoadedModel {
  TrainConfig config;
  int step = 0;
  std::vector<std::shared_ptr<moe::MoEStage>> stages;  // model stages 0..S-1
};

// Loads the latest checkpoint of `run_dir`. Throws std::invalid_argument when the folder has no
// checkpoint, a stage is missing from every rank file, or the run used ep > 1 (expert shards are
// not reassembled here).
LoadedModel load_model(const std::string& run_dir);

// Logits [batch, seq, 256] of token ids [batch, seq] through all stages (no gradients).
at::Tensor forward_logits(const std::vector<std::shared_ptr<moe::MoEStage>>& stages,
                          const at::Tensor& tokens);

// Continues `prompt` by `num_bytes` bytes sampled at `temperature` (0: greedy) with a generator
// seeded by `seed`; the context is the last seq_len bytes. Returns only the new bytes.
std::string generate_text(const LoadedModel& model, const std::string& prompt, int num_bytes,
                          double temperature, std::uint64_t seed);

}  // namespace dualpipe::train

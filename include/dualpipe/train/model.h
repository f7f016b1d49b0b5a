#pragma once
// The byte-level MoE decoder that `dualpipe train` trains, cut into pipeline stages: stage 0
// embeds bytes, the last stage ends in the output head, every stage holds num_layers/num_stages
// decoder blocks. A stage's initial weights depend only on (seed, stage), so every copy of a
// stage (DualPipe's two directions, a single-process reference, an EP shard) starts equal.

#include <memory>
#include <string>

#include "dualpipe/moe/model_config.h"
#include "dualpipe/moe/moe_stage.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

moe::ModelConfig model_config(const TrainConfig& config);

// Model stage `stage` (0 <= stage < config.num_stages()). With `stream` over an EP group of size
// config.ep, the stage holds expert shard `stream->rank()` copied from the dense stage.
// NOTE: seeds LibTorch's default generator (torch::manual_seed) to make the weights; nothing in
// training draws from it afterwards.
std::shared_ptr<moe::MoEStage> build_stage(const TrainConfig& config, int stage,
                                           std::shared_ptr<moe::CommStream> stream = nullptr);

// The index in the whole model of decoder block `block` of model stage `stage`.
int layer_index(const TrainConfig& config, int stage, int block);

// "stage3." : the checkpoint key prefix of a stage's tensors.
std::string stage_prefix(int stage);
// The stage's parameters and buffers as "stage<s>.<name>" (detached, shared with the module).
NamedTensors stage_state(moe::MoEStage& module, int stage);
// Copies "stage<s>.<name>" entries of `tensors` into the module. Throws std::invalid_argument
// naming the first missing or mis-shaped entry.
void load_stage_state(moe::MoEStage& module, int stage, const NamedTensors& tensors);

}  // namespace dualpipe::train

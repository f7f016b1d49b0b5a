#include "dualpipe/train/model.h"

#include <torch/torch.h>

#include <stdexcept>

#include "dualpipe/train/corpus.h"

namespace dualpipe::train {

moe::ModelConfig model_config(const TrainConfig& config) {
  moe::ModelConfig m;
  m.hidden_size = config.hidden_size;
  m.num_heads = config.num_heads;
  m.expert_hidden_size = 2 * config.hidden_size;
  m.num_experts = config.num_experts;
  m.top_k = config.top_k;
  m.num_redundant_experts = config.redundant_experts;
  m.shared_expert = true;
  m.vocab_size = kByteVocabSize;
  return m;
}

std::shared_ptr<moe::MoEStage> build_stage(const TrainConfig& config, int stage,
                                           std::shared_ptr<moe::CommStream> stream) {
  const int num_stages = config.num_stages();
  if (stage < 0 || stage >= num_stages) {
    throw std::invalid_argument("stage " + std::to_string(stage) + " out of range [0, " +
                                std::to_string(num_stages) + ")");
  }
  moe::StageOptions options;
  options.num_blocks = config.num_layers / num_stages;
  options.first = stage == 0;
  options.last = stage == num_stages - 1;
  torch::manual_seed(config.seed * 1000003ULL + static_cast<std::uint64_t>(stage));
  if (!stream || stream->size() == 1) {
    return std::make_shared<moe::MoEStage>(model_config(config), options, stream);
  }
  auto dense = std::make_shared<moe::MoEStage>(model_config(config), options);
  options.ep_rank = stream->rank();
  options.ep_size = stream->size();
  auto shard = std::make_shared<moe::MoEStage>(model_config(config), options, stream);
  shard->copy_from_dense(*dense);
  return shard;
}

int layer_index(const TrainConfig& config, int stage, int block) {
  return stage * (config.num_layers / config.num_stages()) + block;
}

std::string stage_prefix(int stage) {
  return "stage" + std::to_string(stage) + ".";
}

NamedTensors stage_state(moe::MoEStage& module, int stage) {
  NamedTensors out;
  for (const auto& item : module.named_parameters()) {
    out[stage_prefix(stage) + item.key()] = item.value().detach();
  }
  for (const auto& item : module.named_buffers()) {
    out[stage_prefix(stage) + item.key()] = item.value().detach();
  }
  return out;
}

void load_stage_state(moe::MoEStage& module, int stage, const NamedTensors& tensors) {
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, at::Tensor target) {
    const std::string key = stage_prefix(stage) + name;
    auto it = tensors.find(key);
    if (it == tensors.end()) throw std::invalid_argument("checkpoint lacks " + key);
    if (!it->second.sizes().equals(target.sizes())) {
      throw std::invalid_argument("checkpoint entry " + key + " has shape " +
                                  c10::str(it->second.sizes()) + ", the model needs " +
                                  c10::str(target.sizes()));
    }
    target.copy_(it->second);
  };
  for (auto& item : module.named_parameters()) load(item.key(), item.value());
  for (auto& item : module.named_buffers()) load(item.key(), item.value());
}

}  // namespace dualpipe::train

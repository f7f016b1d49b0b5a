#pragma once
// Test helper: the small model every MoE test uses (4 experts, top-2, hidden 16).

#include "dualpipe/moe/model_config.h"

namespace dualpipe::moe::testing {

inline ModelConfig small_config(int vocab_size = ModelConfig{}.vocab_size) {
  ModelConfig config;
  config.hidden_size = 16;
  config.num_heads = 2;
  config.expert_hidden_size = 24;
  config.num_experts = 4;
  config.top_k = 2;
  config.vocab_size = vocab_size;
  return config;
}

}  // namespace dualpipe::moe::testing

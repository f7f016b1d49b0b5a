#pragma once
// Sizes of the MoE transformer that the moe module builds (one config for every stage).

#include <cstdint>

namespace dualpipe::moe {

struct ModelConfig {
  int64_t hidden_size = 32;
  int64_t num_heads = 4;
  // Hidden width of one SwiGLU expert (and of the shared expert).
  int64_t expert_hidden_size = 64;
  int64_t num_experts = 4;
  // Experts each token is routed to.
  int64_t top_k = 2;
  bool shared_expert = true;
  int64_t vocab_size = 64;
  double rms_norm_eps = 1e-6;

  // Throws std::invalid_argument naming the offending values (hidden_size % num_heads,
  // 1 <= top_k <= num_experts, positive sizes).
  void validate() const;
};

}  // namespace dualpipe::moe

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
  // Extra physical expert slots per layer for replicas of hot experts (EPLB's redundant
  // experts): a layer holds num_experts + num_redundant_experts physical experts.
  int64_t num_redundant_experts = 0;
  bool shared_expert = true;
  int64_t vocab_size = 64;
  double rms_norm_eps = 1e-6;

  int64_t num_physical_experts() const { return num_experts + num_redundant_experts; }

  // Throws std::invalid_argument naming the offending values (hidden_size % num_heads,
  // 1 <= top_k <= num_experts, positive sizes, num_redundant_experts >= 0).
  void validate() const;
};

}  // namespace dualpipe::moe

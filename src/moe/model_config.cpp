#include "dualpipe/moe/model_config.h"

#include <stdexcept>
#include <string>

namespace dualpipe::moe {

void ModelConfig::validate() const {
  if (hidden_size <= 0 || num_heads <= 0 || expert_hidden_size <= 0 || num_experts <= 0 ||
      vocab_size <= 0) {
    throw std::invalid_argument(
        "ModelConfig sizes must be positive, got hidden_size=" + std::to_string(hidden_size) +
        ", num_heads=" + std::to_string(num_heads) + ", expert_hidden_size=" +
        std::to_string(expert_hidden_size) + ", num_experts=" + std::to_string(num_experts) +
        ", vocab_size=" + std::to_string(vocab_size));
  }
  if (hidden_size % num_heads != 0) {
    throw std::invalid_argument(
        "ModelConfig needs hidden_size divisible by num_heads, got hidden_size=" +
        std::to_string(hidden_size) + ", num_heads=" + std::to_string(num_heads));
  }
  if (top_k < 1 || top_k > num_experts) {
    throw std::invalid_argument(
        "ModelConfig needs 1 <= top_k <= num_experts, got top_k=" + std::to_string(top_k) +
        ", num_experts=" + std::to_string(num_experts));
  }
  if (num_redundant_experts < 0) {
    throw std::invalid_argument("ModelConfig needs num_redundant_experts >= 0, got " +
                                std::to_string(num_redundant_experts));
  }
}

}  // namespace dualpipe::moe

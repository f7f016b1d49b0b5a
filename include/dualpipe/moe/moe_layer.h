#pragma once
// Mixture-of-experts feed-forward layer with expert parallelism: a router, E SwiGLU experts
// partitioned over the EP ranks (E/EP consecutive experts each), an optional shared expert.
//
// The layer is also available as pieces (route, plan, permute, experts, combine) so that the
// segmented MoE block can run the dispatch and combine all-to-alls itself, asynchronously.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "dualpipe/moe/comm_stream.h"
#include "dualpipe/moe/expert.h"
#include "dualpipe/moe/model_config.h"
#include "dualpipe/moe/router.h"

namespace dualpipe::moe {

// Where each of this rank's routed token rows goes, and what arrives.
struct DispatchPlan {
  int64_t num_tokens = 0;
  int64_t top_k = 0;
  // Send rows are the (token, slot) pairs sorted by global expert (stable): row i carries token
  // sorted_token[i]; unsort[j] is the send row of flattened pair j = token * top_k + slot.
  at::Tensor sorted_token;
  at::Tensor unsort;
  std::vector<int64_t> send_counts;  // [ep_size * local experts], by global expert
  std::vector<int64_t> send_splits;  // [ep_size] rows to each EP rank
  // Filled by complete_plan(): received rows are ordered by source rank, then local expert.
  std::vector<int64_t> recv_counts;  // [ep_size * local experts]: (source rank, local expert)
  std::vector<int64_t> recv_splits;  // [ep_size] rows from each EP rank
  at::Tensor expert_major;           // received row order grouped by local expert
  at::Tensor source_major;           // its inverse
  std::vector<int64_t> rows_per_local_expert;
};

class MoELayerImpl : public torch::nn::Module {
 public:
  // Builds the experts of EP rank `ep_rank` of `ep_size`. Throws std::invalid_argument when
  // num_experts is not divisible by ep_size (with both values) or ep_rank is out of range.
  MoELayerImpl(const ModelConfig& config, int ep_rank = 0, int ep_size = 1);

  // x: [tokens, hidden] -> [tokens, hidden]. Collective over `stream` (every EP rank must call
  // it, in the same order, also for the backward pass); `stream` may be null when ep_size == 1.
  at::Tensor forward(const at::Tensor& x, CommStream* stream);

  // --- pieces, in the order forward() uses them ---
  Routing route(const at::Tensor& x) { return router_->forward(x); }
  // Local part of the plan (no communication).
  DispatchPlan make_plan(const Routing& routing) const;
  // Exchanges the token counts (blocking collective over `stream`) and fills the receive side.
  void complete_plan(DispatchPlan& plan, CommStream* stream) const;
  // Send rows [tokens * top_k, hidden], sorted by expert.
  at::Tensor permute(const at::Tensor& x, const DispatchPlan& plan) const;
  // Received rows -> expert outputs, same row order.
  at::Tensor experts_forward(const at::Tensor& received, const DispatchPlan& plan);
  // The shared expert on the local tokens; undefined when the config has none.
  at::Tensor shared_forward(const at::Tensor& x);
  // Rows back in send order [tokens * top_k, hidden] -> gate-weighted sum [tokens, hidden].
  at::Tensor combine(const at::Tensor& returned, const DispatchPlan& plan,
                     const at::Tensor& weights) const;

  Router& router() { return router_; }
  int64_t num_local_experts() const { return num_local_experts_; }
  int64_t first_expert() const { return ep_rank_ * num_local_experts_; }
  // Copies router, shared expert and this rank's share of the experts from a layer holding all
  // experts (ep_size == 1), e.g. a single-process reference model.
  void copy_from_dense(MoELayerImpl& dense);

 private:
  ModelConfig config_;
  int ep_rank_;
  int ep_size_;
  int64_t num_local_experts_;
  Router router_{nullptr};
  torch::nn::ModuleList experts_{nullptr};
  SwiGLUExpert shared_{nullptr};
};
TORCH_MODULE(MoELayer);

}  // namespace dualpipe::moe

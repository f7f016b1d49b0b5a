#pragma once
// Mixture-of-experts feed-forward layer with expert parallelism: a router over E logical experts,
// an optional shared expert, and P = E + redundant physical expert slots (SwiGLU experts)
// partitioned over the EP ranks (P/EP consecutive slots each).
//
// A placement (physical_to_logical, as planned by the eplb module) says which logical expert each
// physical slot holds; a logical expert may have several replicas. The router picks logical
// experts; each (token, choice) pair then goes to one replica of its expert, spreading the pairs
// of an expert round-robin over its replicas. Replicas must hold identical weights (see
// expert_replicas.h: their gradients are summed after backward, and experts move with their
// optimiser state when the placement changes). The default placement is trivial: slot p holds
// expert p % E.
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
  // Send rows are the (token, choice) pairs sorted by physical slot (stable): row i carries token
  // sorted_token[i]; unsort[j] is the send row of flattened pair j = token * top_k + slot.
  at::Tensor sorted_token;
  at::Tensor unsort;
  // Tokens this rank routed to each logical expert (summed over the top-k choices): [E].
  std::vector<int64_t> logical_counts;
  std::vector<int64_t> send_counts;  // [ep_size * local slots], by global physical slot
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
  // Builds the expert slots of EP rank `ep_rank` of `ep_size` with the trivial placement. Throws
  // std::invalid_argument when the physical experts are not divisible by ep_size (with both
  // values) or ep_rank is out of range.
  // NOTE: redundant slots start as copies of their logical expert when that expert is local
  // (always with ep_size 1) and draw nothing from the random generator, so a model's weights do
  // not depend on num_redundant_experts. A shard (ep_size > 1) gets meaningful weights from
  // copy_from_dense(), as every EP shard does.
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
  const ModelConfig& config() const { return config_; }
  int ep_rank() const { return ep_rank_; }
  int ep_size() const { return ep_size_; }
  // Physical expert slots on this rank, and the global index of the first one.
  int64_t num_local_experts() const { return num_local_experts_; }
  int64_t first_expert() const { return ep_rank_ * num_local_experts_; }
  // The module of local slot `slot` (0 <= slot < num_local_experts()).
  SwiGLUExpertImpl& local_expert(int64_t slot);

  // --- placement ---
  // [physical slot] -> logical expert, over all num_physical_experts() slots of the layer.
  const std::vector<int>& physical_to_logical() const { return physical_to_logical_; }
  // Physical slots holding logical expert `expert`, ascending.
  const std::vector<int>& replicas_of(int expert) const { return replicas_.at(expert); }
  // Routes by a new placement from the next forward on. Moves no weights: the caller makes the
  // slots hold their new experts (move_experts() in expert_replicas.h does both). Throws
  // std::invalid_argument unless the map has one entry per physical slot, each in [0, E), and
  // every logical expert has a slot. Every EP rank must set the same map.
  void set_physical_to_logical(const std::vector<int>& physical_to_logical);
  // Throws what set_physical_to_logical() would throw for this map; changes nothing.
  void check_physical_to_logical(const std::vector<int>& physical_to_logical) const;

  // --- load window: tokens routed to each logical expert by this rank's training forwards
  // (grad mode on) since the last reset, [E] ---
  const std::vector<int64_t>& token_counts() const { return token_counts_; }
  void set_token_counts(const std::vector<int64_t>& counts);
  void reset_token_counts() { token_counts_.assign(config_.num_experts, 0); }
  // Adds plan.logical_counts to the window when grad mode is on (the segmented block calls it
  // after make_plan; forward() does it itself).
  void record_load(const DispatchPlan& plan);
  // Copies router, shared expert and this rank's share of the experts from a layer holding all
  // experts (ep_size == 1), e.g. a single-process reference model.
  void copy_from_dense(MoELayerImpl& dense);

 private:
  // Validates a placement map and returns [logical] -> its physical slots, ascending.
  std::vector<std::vector<int>> replica_lists(const std::vector<int>& physical_to_logical) const;

  ModelConfig config_;
  int ep_rank_;
  int ep_size_;
  int64_t num_local_experts_;
  std::vector<int> physical_to_logical_;
  std::vector<std::vector<int>> replicas_;
  std::vector<int64_t> token_counts_;
  Router router_{nullptr};
  torch::nn::ModuleList experts_{nullptr};
  SwiGLUExpert shared_{nullptr};
};
TORCH_MODULE(MoELayer);

}  // namespace dualpipe::moe

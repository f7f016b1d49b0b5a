#pragma once
// EPLB inside training: the expert placement of every MoE layer of the model, the sum of replica
// gradients after each step, and every `eplb_interval` steps a rebalance from the tokens each
// layer routed to each expert since the last one (summed over all ranks, so every rank plans the
// same placement), with the experts' weights and optimiser moments moving to their new slots.

#include <chrono>
#include <string>
#include <vector>

#include "dualpipe/moe/expert_replicas.h"
#include "dualpipe/moe/moe_layer.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

// An MoE layer module of this rank and which layer of the model it is.
struct LocalLayer {
  int layer = 0;  // global index: stage * layers_per_stage + block
  int stage = 0;
  int block = 0;
  moe::MoELayerImpl* module = nullptr;
};

struct RebalanceReport {
  int layers_changed = 0;
  // Per-GPU (EP rank) token imbalance, max/mean, averaged over layers, of the window's loads
  // under the old and the new placement (1.0: balanced; always 1.0 with ep 1).
  double imbalance_before = 1.0;
  double imbalance_after = 1.0;
  double assignments = 0;  // (token, expert) choices counted in the window, all layers and ranks
};

class ExpertBalancer {
 public:
  // `layers`: every MoE layer module of this rank (both copies of a DualPipe stage). `world`
  // spans every rank of the job; `ep_group` this rank's EP group (null or size 1 without EP).
  // `world_members` and `ep_members` say who is in them, for errors naming the peers waited for.
  ExpertBalancer(const TrainConfig& config, std::vector<LocalLayer> layers,
                 runtime::CommunicatorPtr world, runtime::CommunicatorPtr ep_group,
                 std::chrono::milliseconds timeout, runtime::GroupMembers world_members = {},
                 runtime::GroupMembers ep_members = {});

  // After backward and before the optimiser step: replicas get their summed gradients.
  void sum_replica_gradients();

  bool due(int step) const { return interval_ > 0 && step % interval_ == 0; }
  // Collective over `world`: plans from the counted loads, moves experts (with `companions`,
  // e.g. the optimiser's moments) and starts a new window.
  RebalanceReport rebalance(const moe::CompanionTensors& companions);

  // [layer][physical] -> logical, the same on every rank.
  const std::vector<std::vector<int>>& placement() const { return placement_; }
  // Routes by `placement` (from a checkpoint, whose weights already sit in their slots). Throws
  // std::invalid_argument when its shape does not fit the model.
  void restore_placement(const std::vector<std::vector<int>>& placement);
  // This rank's token windows, as "eplb.stage<s>.blocks.<b>.token_counts".
  void save_counts(NamedTensors& out) const;
  // Restores them; entries absent from `in` leave an empty window.
  void load_counts(const NamedTensors& in);

 private:
  std::vector<LocalLayer> layers_;
  runtime::CommunicatorPtr world_;
  runtime::CommunicatorPtr ep_group_;
  std::chrono::milliseconds timeout_;
  runtime::GroupMembers world_members_;
  runtime::GroupMembers ep_members_;
  int interval_;
  int num_layers_;
  int num_experts_;
  int num_physical_;
  int ep_;
  std::vector<std::vector<int>> placement_;
};

// The checkpoint key of a layer's token window.
std::string token_counts_key(int stage, int block);

}  // namespace dualpipe::train

#include "dualpipe/train/expert_balancer.h"

#include <ATen/ATen.h>

#include <stdexcept>

#include "dualpipe/eplb/expert_placement.h"
#include "dualpipe/eplb/rebalance.h"

namespace dualpipe::train {
namespace {

std::vector<moe::MoELayerImpl*> modules_of(const std::vector<LocalLayer>& layers) {
  std::vector<moe::MoELayerImpl*> out;
  for (const LocalLayer& l : layers) out.push_back(l.module);
  return out;
}

double mean(const std::vector<double>& values) {
  if (values.empty()) return 1.0;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

}  // namespace

std::string token_counts_key(int stage, int block) {
  return "eplb.stage" + std::to_string(stage) + ".blocks." + std::to_string(block) +
         ".token_counts";
}

ExpertBalancer::ExpertBalancer(const TrainConfig& config, std::vector<LocalLayer> layers,
                               runtime::CommunicatorPtr world, runtime::CommunicatorPtr ep_group,
                               std::chrono::milliseconds timeout,
                               runtime::GroupMembers world_members,
                               runtime::GroupMembers ep_members)
    : layers_(std::move(layers)),
      world_(std::move(world)),
      ep_group_(std::move(ep_group)),
      timeout_(timeout),
      world_members_(std::move(world_members)),
      ep_members_(std::move(ep_members)),
      interval_(config.eplb_interval),
      num_layers_(config.num_layers),
      num_experts_(config.num_experts),
      num_physical_(config.num_physical_experts()),
      ep_(config.ep),
      placement_(eplb::trivial_placement(num_layers_, num_experts_, num_physical_, ep_)
                     .physical_to_logical) {
  for (const LocalLayer& l : layers_) {
    if (l.layer < 0 || l.layer >= num_layers_ || l.module == nullptr) {
      throw std::invalid_argument("ExpertBalancer: layer " + std::to_string(l.layer) +
                                  " outside the model's " + std::to_string(num_layers_));
    }
    if (l.module->physical_to_logical() != placement_[l.layer]) {
      throw std::invalid_argument("ExpertBalancer: layer " + std::to_string(l.layer) +
                                  " does not start on the trivial placement");
    }
  }
}

void ExpertBalancer::sum_replica_gradients() {
  moe::sum_replica_gradients(modules_of(layers_), ep_group_, timeout_, ep_members_);
}

RebalanceReport ExpertBalancer::rebalance(const moe::CompanionTensors& companions) {
  std::vector<double> flat(static_cast<std::size_t>(num_layers_) * num_experts_, 0.0);
  for (const LocalLayer& l : layers_) {
    const std::vector<int64_t>& counts = l.module->token_counts();
    for (int e = 0; e < num_experts_; ++e) {
      flat[static_cast<std::size_t>(l.layer) * num_experts_ + e] += static_cast<double>(counts[e]);
    }
  }
  if (world_ && world_->getSize() > 1) {
    std::vector<at::Tensor> tensors = {
        at::from_blob(flat.data(), {static_cast<int64_t>(flat.size())}, at::kDouble)};
    runtime::wait_collective(world_->allreduce(tensors), *world_, world_members_,
                             "allreduce of the expert loads for EPLB", timeout_);
  }
  eplb::LoadMatrix matrix(num_layers_, std::vector<double>(num_experts_));
  RebalanceReport report;
  for (int l = 0; l < num_layers_; ++l) {
    for (int e = 0; e < num_experts_; ++e) {
      matrix[l][e] = flat[static_cast<std::size_t>(l) * num_experts_ + e];
      report.assignments += matrix[l][e];
    }
  }
  const eplb::ExpertPlacement old_placement =
      eplb::placement_from_physical_to_logical(placement_, num_experts_, ep_);
  const eplb::ExpertPlacement new_placement =
      eplb::rebalance_experts(matrix, num_physical_, /*num_groups=*/1, /*num_nodes=*/1, ep_);
  report.imbalance_before = mean(eplb::gpu_imbalance(old_placement, matrix));
  report.imbalance_after = mean(eplb::gpu_imbalance(new_placement, matrix));
  std::vector<std::vector<int>> maps;
  for (const LocalLayer& l : layers_) maps.push_back(new_placement.physical_to_logical[l.layer]);
  moe::move_experts(modules_of(layers_), maps, companions, ep_group_, timeout_, ep_members_);
  for (int l = 0; l < num_layers_; ++l) {
    if (new_placement.physical_to_logical[l] != placement_[l]) ++report.layers_changed;
  }
  placement_ = new_placement.physical_to_logical;
  for (const LocalLayer& l : layers_) l.module->reset_token_counts();
  return report;
}

void ExpertBalancer::restore_placement(const std::vector<std::vector<int>>& placement) {
  if (static_cast<int>(placement.size()) != num_layers_) {
    throw std::invalid_argument("expert placement has " + std::to_string(placement.size()) +
                                " layers, the model has " + std::to_string(num_layers_));
  }
  for (const LocalLayer& l : layers_) l.module->check_physical_to_logical(placement[l.layer]);
  placement_ = placement;
  for (const LocalLayer& l : layers_) l.module->set_physical_to_logical(placement_[l.layer]);
}

void ExpertBalancer::save_counts(NamedTensors& out) const {
  for (const LocalLayer& l : layers_) {
    out[token_counts_key(l.stage, l.block)] = at::tensor(l.module->token_counts(), at::kLong);
  }
}

void ExpertBalancer::load_counts(const NamedTensors& in) {
  for (const LocalLayer& l : layers_) {
    auto it = in.find(token_counts_key(l.stage, l.block));
    if (it == in.end()) {
      l.module->reset_token_counts();
      continue;
    }
    const at::Tensor counts = it->second.to(at::kLong).contiguous();
    l.module->set_token_counts(std::vector<int64_t>(counts.data_ptr<int64_t>(),
                                                    counts.data_ptr<int64_t>() + counts.numel()));
  }
}

}  // namespace dualpipe::train

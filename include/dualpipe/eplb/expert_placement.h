#pragma once
// Which logical expert each physical expert slot of an MoE layer holds: the output of the
// expert-parallel load balancer (EPLB) and the input of an expert-parallel MoE layer.
//
// Physical experts are numbered GPU-major: GPU g holds physical experts
// [g * slots_per_gpu(), (g + 1) * slots_per_gpu()). A logical expert may have several
// physical replicas; tokens routed to it are split evenly among them.

#include <vector>

namespace dualpipe::eplb {

// Measured load (e.g. tokens routed) of every logical expert: `[layer][logical_expert]`.
// The largest load (tokens routed to one expert) accepted: far above any real count, and small
// enough that sums over layers, experts and GPUs stay finite (1e308 would overflow to inf).
inline constexpr double kMaxLoad = 1e15;
// The largest plans rebalance_experts() makes, checked before allocating: num_replicas up to
// kMaxReplicas and layers * num_replicas up to kMaxPlacementSlots (DeepSeek-V3: 61 x 288).
inline constexpr int kMaxReplicas = 1 << 16;
inline constexpr long long kMaxPlacementSlots = 1LL << 22;

using LoadMatrix = std::vector<std::vector<double>>;

struct ExpertPlacement {
  int num_gpus = 0;
  // `[layer][physical]` -> logical expert held by that physical slot.
  std::vector<std::vector<int>> physical_to_logical;
  // `[layer][logical][replica]` -> physical slot of that replica, -1 past replica_count; every
  // expert's list has max_replicas() entries.
  std::vector<std::vector<std::vector<int>>> logical_to_physical;
  // `[layer][logical]` -> number of physical replicas of that expert (>= 1).
  std::vector<std::vector<int>> replica_count;

  int num_layers() const { return static_cast<int>(physical_to_logical.size()); }
  int num_logical_experts() const;
  int num_physical_experts() const;
  int slots_per_gpu() const { return num_physical_experts() / num_gpus; }
  int max_replicas() const;
  int gpu_of(int physical) const { return physical / slots_per_gpu(); }
  // The physical slots holding `expert` in `layer`, in replica order (no -1 padding).
  // Throws std::out_of_range for a layer or expert outside the placement.
  std::vector<int> replicas_of(int layer, int expert) const;

  // Throws std::invalid_argument naming the first inconsistency: ragged maps, a GPU count that
  // does not divide the slots, an expert without a replica, or the three maps disagreeing.
  void validate() const;
};

// The placement without load balancing, the baseline EPLB is measured against: physical slot p
// holds logical expert p % num_logical_experts (experts laid out contiguously over the GPUs,
// extra slots cycle from expert 0 again), identical on every layer.
// Throws std::invalid_argument unless num_physical_experts >= num_logical_experts >= 1 and
// num_gpus divides num_physical_experts.
ExpertPlacement trivial_placement(int num_layers, int num_logical_experts, int num_physical_experts,
                                  int num_gpus);

// The placement whose physical_to_logical is `physical_to_logical` (`[layer][physical]`), with
// the other two maps derived from it (replicas in ascending slot order). Throws
// std::invalid_argument as validate() does, e.g. for an expert without a slot.
ExpertPlacement placement_from_physical_to_logical(
    const std::vector<std::vector<int>>& physical_to_logical, int num_logical_experts,
    int num_gpus);

// `[layer][gpu]` -> load on that GPU when each expert's load is split evenly among its
// replicas. Throws std::invalid_argument when `load`'s shape does not match the placement.
std::vector<std::vector<double>> gpu_loads(const ExpertPlacement& placement,
                                           const LoadMatrix& load);

// max / mean of per-GPU loads for each layer (1.0 is perfect balance; a layer with no load
// counts as 1.0).
std::vector<double> gpu_imbalance(const ExpertPlacement& placement, const LoadMatrix& load);

}  // namespace dualpipe::eplb

#pragma once
// The expert-parallel load balancer (EPLB, deepseek-ai/EPLB `eplb.py`): from measured expert
// loads, decide how many replicas each expert gets and which GPU hosts each replica.
//
// Results match the reference bit for bit on its README example. Ties break as the reference's
// do: items are visited in a stable descending sort of their weight (equal weights keep index
// order), a new replica goes to the first expert with the maximum load per replica, and an item
// goes to the first lightest pack. NOTE: the reference computes in float32; we compute in double,
// so near-ties that float32 rounds to equal may break differently on non-integer loads.

#include <vector>

#include "dualpipe/eplb/expert_placement.h"

namespace dualpipe::eplb {

struct Packing {
  std::vector<int> pack;          // [item] -> pack index
  std::vector<int> rank_in_pack;  // [item] -> position of the item inside its pack
};

// Packs `weight.size()` items into `num_packs` packs of exactly weight.size() / num_packs items
// each: heaviest item first, each into the lightest pack that still has room. With one item per
// pack, item i goes to pack i (as the reference does). Throws std::invalid_argument unless
// num_packs >= 1 divides the item count.
Packing balanced_packing(const std::vector<double>& weight, int num_packs);

struct Replication {
  std::vector<int> physical_to_logical;  // [physical] -> logical; the first num_logical are 0..n-1
  std::vector<int> replica_rank;         // [physical] -> which replica of its expert it is
  std::vector<int> replica_count;        // [logical] -> replicas
};

// Grows `weight.size()` logical experts to `num_physical` physical ones, adding one replica at a
// time to the expert with the highest load per replica, which minimises the maximum load per
// replica. Throws std::invalid_argument unless num_physical >= weight.size().
Replication replicate_experts(const std::vector<double>& weight, int num_physical);

// The EPLB entry point. `weight` is `[layers][logical experts]` with finite loads >= 0.
// Hierarchical policy when num_groups % num_nodes == 0: expert groups are packed onto nodes,
// experts are replicated within each node, and each node's replicas are packed onto its GPUs.
// Otherwise the global policy: the same with one group and one node (replicas may then land on
// any GPU).
// Throws std::invalid_argument, with the values, when a size is not positive, weight is empty
// or ragged or has a negative or non-finite load, num_groups does not divide the experts,
// num_nodes does not divide num_gpus, num_gpus does not divide num_replicas, or
// num_replicas < number of experts.
ExpertPlacement rebalance_experts(const LoadMatrix& weight, int num_replicas, int num_groups,
                                  int num_nodes, int num_gpus);

// True when rebalance_experts would use the hierarchical policy for these sizes.
inline bool uses_hierarchical_policy(int num_groups, int num_nodes) {
  return num_nodes > 0 && num_groups % num_nodes == 0;
}

}  // namespace dualpipe::eplb

#pragma once
// The expert-parallel load balancer (EPLB, deepseek-ai/EPLB `eplb.py`): from measured expert
// loads, decide how many replicas each expert gets and which GPU hosts each replica.
//
// Results match the reference bit for bit on its README example. Ties break as the reference's
// do: a new replica goes to the first expert with the maximum load per replica, and an item goes
// to the first lightest pack; items are visited in descending order of their weight, by default a
// stable sort (equal weights keep index order). NOTE: the reference visits them in torch.sort's
// order, which on CPU is not stable beyond 16 items (replicas of one expert always tie), and
// computes in float32: RebalanceOptions reproduces both (the Python package does, so that
// dualpipe.eplb.rebalance_experts returns what eplb.py returns).

#include <functional>
#include <vector>

#include "dualpipe/eplb/expert_placement.h"

namespace dualpipe::eplb {

struct Packing {
  std::vector<int> pack;          // [item] -> pack index
  std::vector<int> rank_in_pack;  // [item] -> position of the item inside its pack
};

// Indices of `weight` by descending weight: the order in which balanced_packing visits items.
// Must return a permutation of 0..weight.size()-1 that sorts `weight` descending.
using DescendingOrder = std::function<std::vector<int>(const std::vector<double>& weight)>;

// The stable descending order (equal weights keep index order): the default DescendingOrder.
std::vector<int> stable_descending_order(const std::vector<double>& weight);

// Packs `weight.size()` items into `num_packs` packs of exactly weight.size() / num_packs items
// each: heaviest item first, each into the lightest pack that still has room. With one item per
// pack, item i goes to pack i (as the reference does). Items are visited in `order`'s order (empty:
// stable_descending_order). Throws std::invalid_argument unless num_packs >= 1 divides the item
// count, or when `order` returns something that is not a descending permutation of the items.
Packing balanced_packing(const std::vector<double>& weight, int num_packs,
                         const DescendingOrder& order = {});

struct Replication {
  std::vector<int> physical_to_logical;  // [physical] -> logical; the first num_logical are 0..n-1
  std::vector<int> replica_rank;         // [physical] -> which replica of its expert it is
  std::vector<int> replica_count;        // [logical] -> replicas
};

// Grows `weight.size()` logical experts to `num_physical` physical ones, adding one replica at a
// time to the expert with the highest load per replica, which minimises the maximum load per
// replica. Throws std::invalid_argument unless num_physical >= weight.size().
Replication replicate_experts(const std::vector<double>& weight, int num_physical);

// How rebalance_experts computes; the defaults are the C++ planner's own choices.
struct RebalanceOptions {
  // eplb.py's arithmetic: loads are rounded to float32 and every sum and division is done in
  // float32 (in the reference's order), so near-ties that float32 rounds to equal break as
  // there. Default: double. NOTE: per-group load sums are sequential; torch's vectorised sum may
  // round a non-integer group sum differently in the last bit (integer loads below 2^24 are exact
  // either way).
  bool float32 = false;
  // The order balanced_packing visits items in (empty: stable_descending_order). The Python
  // package passes torch.sort(descending=True), eplb.py's order.
  DescendingOrder descending_order;
};

// The EPLB entry point. `weight` is `[layers][logical experts]` with finite loads >= 0.
// Hierarchical policy when num_groups % num_nodes == 0: expert groups are packed onto nodes,
// experts are replicated within each node, and each node's replicas are packed onto its GPUs.
// Otherwise the global policy: the same with one group and one node (replicas may then land on
// any GPU; num_groups and num_nodes are then not used, as in the reference).
// Throws std::invalid_argument, with the values, when a size is not positive, weight is empty
// or ragged or has a negative or non-finite load, num_gpus does not divide num_replicas,
// num_replicas < number of experts, or (hierarchical policy only) num_groups does not divide the
// experts or num_nodes does not divide num_gpus. Pure apart from calls to
// options.descending_order.
ExpertPlacement rebalance_experts(const LoadMatrix& weight, int num_replicas, int num_groups,
                                  int num_nodes, int num_gpus,
                                  const RebalanceOptions& options = {});

// True when rebalance_experts would use the hierarchical policy for these sizes.
inline bool uses_hierarchical_policy(int num_groups, int num_nodes) {
  return num_nodes > 0 && num_groups % num_nodes == 0;
}

}  // namespace dualpipe::eplb

#include "dualpipe/eplb/rebalance.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "dualpipe/check.h"

namespace dualpipe::eplb {
namespace {

std::invalid_argument size_error(const std::string& what) {
  return std::invalid_argument("rebalance_experts: " + what);
}

std::vector<int> inverse(const std::vector<int>& permutation) {
  std::vector<int> inv(permutation.size());
  for (size_t i = 0; i < permutation.size(); ++i) inv[permutation[i]] = static_cast<int>(i);
  return inv;
}

void check_sizes(const LoadMatrix& weight, int num_replicas, int num_groups, int num_nodes,
                 int num_gpus) {
  if (num_replicas <= 0 || num_groups <= 0 || num_nodes <= 0 || num_gpus <= 0) {
    throw size_error("sizes must be positive, got num_replicas=" + std::to_string(num_replicas) +
                     ", num_groups=" + std::to_string(num_groups) + ", num_nodes=" +
                     std::to_string(num_nodes) + ", num_gpus=" + std::to_string(num_gpus));
  }
  if (weight.empty() || weight.front().empty()) {
    throw size_error("weight needs at least one layer and one expert, got " +
                     std::to_string(weight.size()) + " layers");
  }
  const size_t num_experts = weight.front().size();
  for (size_t layer = 0; layer < weight.size(); ++layer) {
    if (weight[layer].size() != num_experts) {
      throw size_error("every layer needs the same number of experts, layer 0 has " +
                       std::to_string(num_experts) + " and layer " + std::to_string(layer) +
                       " has " + std::to_string(weight[layer].size()));
    }
    for (size_t expert = 0; expert < num_experts; ++expert) {
      const double w = weight[layer][expert];
      if (!std::isfinite(w) || w < 0 || w > kMaxLoad) {
        throw size_error("loads must be finite, >= 0 and <= 1e15, got " + std::to_string(w) +
                         " at layer " + std::to_string(layer) + ", expert " +
                         std::to_string(expert));
      }
    }
  }
  const int e = static_cast<int>(num_experts);
  if (num_replicas > kMaxReplicas ||
      static_cast<long long>(num_replicas) * static_cast<long long>(weight.size()) >
          kMaxPlacementSlots) {
    throw size_error("plan too large: num_replicas=" + std::to_string(num_replicas) + " for " +
                     std::to_string(weight.size()) +
                     " layers; accepted: num_replicas <= " + std::to_string(kMaxReplicas) +
                     " and layers * num_replicas <= " + std::to_string(kMaxPlacementSlots));
  }
  // NOTE: the reference checks groups and nodes only where it uses them: the global policy
  // (num_groups % num_nodes != 0) plans with one group on one node.
  if (uses_hierarchical_policy(num_groups, num_nodes)) {
    if (e % num_groups != 0) {
      throw size_error(
          "num_groups must divide the number of experts (hierarchical policy: "
          "num_groups % num_nodes == 0), got num_experts=" +
          std::to_string(e) + ", num_groups=" + std::to_string(num_groups) +
          ", num_nodes=" + std::to_string(num_nodes));
    }
    if (num_gpus % num_nodes != 0) {
      throw size_error(
          "num_nodes must divide num_gpus (hierarchical policy: num_groups % "
          "num_nodes == 0), got num_gpus=" +
          std::to_string(num_gpus) + ", num_nodes=" + std::to_string(num_nodes) +
          ", num_groups=" + std::to_string(num_groups));
    }
  }
  if (num_replicas % num_gpus != 0) {
    throw size_error("num_gpus must divide num_replicas, got num_replicas=" +
                     std::to_string(num_replicas) + ", num_gpus=" + std::to_string(num_gpus));
  }
  if (num_replicas < e) {
    throw size_error("num_replicas must be at least the number of experts, got num_replicas=" +
                     std::to_string(num_replicas) + ", num_experts=" + std::to_string(e));
  }
}

// The visiting order for `weight` from `order` (empty: stable), checked to be a descending
// permutation: a wrong callback would otherwise corrupt the plan silently.
template <typename Real>
std::vector<int> visiting_order(const std::vector<Real>& weight, const DescendingOrder& order) {
  const std::vector<double> as_double(weight.begin(), weight.end());
  if (!order) return stable_descending_order(as_double);
  std::vector<int> visit = order(as_double);
  DUALPIPE_CHECK_EQ(visit.size(), weight.size(), "balanced_packing: the descending order");
  std::vector<char> seen(weight.size(), 0);
  for (size_t i = 0; i < visit.size(); ++i) {
    const int item = visit[i];
    DUALPIPE_CHECK(item >= 0 && item < static_cast<int>(weight.size()) && !seen[item],
                   "balanced_packing: the descending order is not a permutation: position ", i,
                   " holds ", item, " for ", weight.size(), " items");
    seen[item] = 1;
    DUALPIPE_CHECK(i == 0 || !(weight[item] > weight[visit[i - 1]]),
                   "balanced_packing: the order is not descending at position ", i, ": item ", item,
                   " weighs ", weight[item], " after item ", visit[i - 1], " with ",
                   weight[visit[i - 1]]);
  }
  return visit;
}

// balanced_packing in Real arithmetic (pack loads accumulate in Real, as the reference's
// float32 pack weights do).
template <typename Real>
Packing pack(const std::vector<Real>& weight, int num_packs, const DescendingOrder& order) {
  const int num_items = static_cast<int>(weight.size());
  if (num_packs <= 0 || num_items % num_packs != 0) {
    throw std::invalid_argument(
        "balanced_packing: num_packs must be positive and divide the item count, got items=" +
        std::to_string(num_items) + ", num_packs=" + std::to_string(num_packs));
  }
  const int items_per_pack = num_items / num_packs;
  Packing packing;
  packing.pack.assign(num_items, -1);
  packing.rank_in_pack.assign(num_items, -1);
  if (items_per_pack == 1) {
    // NOTE: the reference short-cuts this case to the identity, which differs from what the
    // greedy loop would give (heaviest item into pack 0); keep it for identical results.
    std::iota(packing.pack.begin(), packing.pack.end(), 0);
    std::fill(packing.rank_in_pack.begin(), packing.rank_in_pack.end(), 0);
    return packing;
  }
  std::vector<Real> pack_load(num_packs, Real{0});
  std::vector<int> pack_items(num_packs, 0);
  for (int item : visiting_order(weight, order)) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      if (pack_items[p] < items_per_pack && (best < 0 || pack_load[p] < pack_load[best])) best = p;
    }
    packing.pack[item] = best;
    packing.rank_in_pack[item] = pack_items[best];
    pack_load[best] += weight[item];
    ++pack_items[best];
  }
  return packing;
}

// replicate_experts in Real arithmetic (loads per replica divided in Real).
template <typename Real>
Replication replicate(const std::vector<Real>& weight, int num_physical) {
  const int num_logical = static_cast<int>(weight.size());
  if (num_physical < num_logical) {
    throw std::invalid_argument(
        "replicate_experts: need at least one physical expert per logical one, got num_logical=" +
        std::to_string(num_logical) + ", num_physical=" + std::to_string(num_physical));
  }
  Replication r;
  r.physical_to_logical.resize(num_physical);
  std::iota(r.physical_to_logical.begin(), r.physical_to_logical.begin() + num_logical, 0);
  r.replica_rank.assign(num_physical, 0);
  r.replica_count.assign(num_logical, 1);
  // NOTE: a linear scan, not a heap: it keeps the reference's "first index of the maximum" rule
  // trivially, and E * (R - E) is ~10^4 per layer at DeepSeek-V3 sizes.
  for (int p = num_logical; p < num_physical; ++p) {
    int best = 0;
    Real best_load = weight[0] / static_cast<Real>(r.replica_count[0]);
    for (int e = 1; e < num_logical; ++e) {
      const Real load = weight[e] / static_cast<Real>(r.replica_count[e]);
      if (load > best_load) {
        best = e;
        best_load = load;
      }
    }
    r.physical_to_logical[p] = best;
    r.replica_rank[p] = r.replica_count[best]++;
  }
  return r;
}

// One layer of the reference's rebalance_experts_hierarchical in Real arithmetic. The global
// policy is this with num_groups = num_nodes = 1.
template <typename Real>
void rebalance_layer(const std::vector<Real>& weight, int num_physical, int num_groups,
                     int num_nodes, int num_gpus, const DescendingOrder& order,
                     std::vector<int>& physical_to_logical, std::vector<int>& physical_rank,
                     std::vector<int>& logical_count) {
  const int num_logical = static_cast<int>(weight.size());
  const int group_size = num_logical / num_groups;
  const int groups_per_node = num_groups / num_nodes;
  const int logical_per_node = num_logical / num_nodes;
  const int physical_per_node = num_physical / num_nodes;
  const int physical_per_gpu = num_physical / num_gpus;

  // Step 1: pack expert groups onto nodes. "mlog" numbers logical experts node-major: node n owns
  // mlog [n * logical_per_node, (n + 1) * logical_per_node).
  std::vector<Real> group_load(num_groups, Real{0});
  for (int e = 0; e < num_logical; ++e) group_load[e / group_size] += weight[e];
  const Packing group_packing = pack(group_load, num_nodes, order);
  std::vector<int> log_to_mlog(num_logical);
  for (int e = 0; e < num_logical; ++e) {
    const int g = e / group_size;
    log_to_mlog[e] =
        (group_packing.pack[g] * groups_per_node + group_packing.rank_in_pack[g]) * group_size +
        e % group_size;
  }
  const std::vector<int> mlog_to_log = inverse(log_to_mlog);

  std::vector<int> mlog_count(num_logical);
  for (int node = 0; node < num_nodes; ++node) {
    // Step 2: replicate experts within the node.
    std::vector<Real> node_load(logical_per_node);
    for (int j = 0; j < logical_per_node; ++j) {
      node_load[j] = weight[mlog_to_log[node * logical_per_node + j]];
    }
    const Replication replication = replicate(node_load, physical_per_node);

    // Step 3: pack the node's physical experts onto its GPUs.
    std::vector<Real> physical_load(physical_per_node);
    for (int p = 0; p < physical_per_node; ++p) {
      const int j = replication.physical_to_logical[p];
      physical_load[p] = node_load[j] / static_cast<Real>(replication.replica_count[j]);
    }
    const Packing gpu_packing = pack(physical_load, num_gpus / num_nodes, order);
    for (int p = 0; p < physical_per_node; ++p) {
      // Slot of node-local physical expert p after packing, made global by the node offset.
      const int slot = node * physical_per_node + gpu_packing.pack[p] * physical_per_gpu +
                       gpu_packing.rank_in_pack[p];
      physical_to_logical[slot] =
          mlog_to_log[node * logical_per_node + replication.physical_to_logical[p]];
      physical_rank[slot] = replication.replica_rank[p];
    }
    for (int j = 0; j < logical_per_node; ++j) {
      mlog_count[node * logical_per_node + j] = replication.replica_count[j];
    }
  }
  for (int e = 0; e < num_logical; ++e) logical_count[e] = mlog_count[log_to_mlog[e]];
}

template <typename Real>
std::vector<Real> rounded_to(const std::vector<double>& weight) {
  return std::vector<Real>(weight.begin(), weight.end());
}

}  // namespace

std::vector<int> stable_descending_order(const std::vector<double>& weight) {
  std::vector<int> order(weight.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight[a] > weight[b]; });
  return order;
}

Packing balanced_packing(const std::vector<double>& weight, int num_packs,
                         const DescendingOrder& order) {
  return pack(weight, num_packs, order);
}

Replication replicate_experts(const std::vector<double>& weight, int num_physical) {
  return replicate(weight, num_physical);
}

ExpertPlacement rebalance_experts(const LoadMatrix& weight, int num_replicas, int num_groups,
                                  int num_nodes, int num_gpus, const RebalanceOptions& options) {
  check_sizes(weight, num_replicas, num_groups, num_nodes, num_gpus);
  if (!uses_hierarchical_policy(num_groups, num_nodes)) {
    num_groups = 1;
    num_nodes = 1;
  }
  const int num_layers = static_cast<int>(weight.size());
  const int num_logical = static_cast<int>(weight.front().size());
  ExpertPlacement placement;
  placement.num_gpus = num_gpus;
  placement.physical_to_logical.assign(num_layers, std::vector<int>(num_replicas));
  placement.replica_count.assign(num_layers, std::vector<int>(num_logical));
  std::vector<std::vector<int>> physical_rank(num_layers, std::vector<int>(num_replicas));
  for (int layer = 0; layer < num_layers; ++layer) {
    if (options.float32) {
      rebalance_layer(rounded_to<float>(weight[layer]), num_replicas, num_groups, num_nodes,
                      num_gpus, options.descending_order, placement.physical_to_logical[layer],
                      physical_rank[layer], placement.replica_count[layer]);
    } else {
      rebalance_layer(weight[layer], num_replicas, num_groups, num_nodes, num_gpus,
                      options.descending_order, placement.physical_to_logical[layer],
                      physical_rank[layer], placement.replica_count[layer]);
    }
  }
  int max_replicas = 0;
  for (const auto& counts : placement.replica_count) {
    max_replicas = std::max(max_replicas, *std::max_element(counts.begin(), counts.end()));
  }
  placement.logical_to_physical.assign(
      num_layers, std::vector<std::vector<int>>(num_logical, std::vector<int>(max_replicas, -1)));
  for (int layer = 0; layer < num_layers; ++layer) {
    for (int p = 0; p < num_replicas; ++p) {
      placement.logical_to_physical[layer][placement.physical_to_logical[layer][p]]
                                   [physical_rank[layer][p]] = p;
    }
  }
  return placement;
}

}  // namespace dualpipe::eplb

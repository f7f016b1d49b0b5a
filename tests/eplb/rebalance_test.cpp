#include "dualpipe/eplb/rebalance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>

namespace dualpipe::eplb {
namespace {

const LoadMatrix kReadmeWeight = {
    {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
    {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27},
};

// deepseek-ai/EPLB README: 2 layers, 12 experts, 16 replicas, 4 groups, 2 nodes, 8 GPUs.
TEST(RebalanceExperts, MatchesReferenceReadme) {
  const ExpertPlacement p = rebalance_experts(kReadmeWeight, 16, 4, 2, 8);
  const std::vector<std::vector<int>> expected = {
      {5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
      {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1},
  };
  EXPECT_EQ(p.physical_to_logical, expected);
  EXPECT_NO_THROW(p.validate());
  EXPECT_EQ(p.max_replicas(), 2);
  // Layer 0: expert 5 is on slots 0 and 2, expert 1 on 15 (replica 0) and 13.
  EXPECT_EQ(p.replicas_of(0, 5), (std::vector<int>{0, 2}));
  EXPECT_EQ(p.replicas_of(0, 1), (std::vector<int>{15, 13}));
  EXPECT_EQ(p.replicas_of(0, 0), (std::vector<int>{12}));
  EXPECT_EQ(p.logical_to_physical[0][0], (std::vector<int>{12, -1}));
}

TEST(RebalanceExperts, GlobalPolicyWhenGroupsDoNotDivideNodes) {
  // 3 groups over 2 nodes: the reference falls back to one group, one node.
  const ExpertPlacement global = rebalance_experts(kReadmeWeight, 16, 3, 2, 8);
  const ExpertPlacement explicit_global = rebalance_experts(kReadmeWeight, 16, 1, 1, 8);
  EXPECT_EQ(global.physical_to_logical, explicit_global.physical_to_logical);
  EXPECT_NO_THROW(global.validate());
  EXPECT_FALSE(uses_hierarchical_policy(3, 2));
}

// eplb.py checks groups and nodes only under the hierarchical policy: with num_groups % num_nodes
// != 0 it plans globally, so 5 groups need not divide 12 experts nor 3 nodes 8 GPUs.
TEST(RebalanceExperts, GlobalPolicyIgnoresGroupsAndNodes) {
  const ExpertPlacement explicit_global = rebalance_experts(kReadmeWeight, 16, 1, 1, 8);
  EXPECT_EQ(rebalance_experts(kReadmeWeight, 16, 5, 2, 8).physical_to_logical,
            explicit_global.physical_to_logical);
  EXPECT_EQ(rebalance_experts(kReadmeWeight, 16, 4, 3, 8).physical_to_logical,
            explicit_global.physical_to_logical);
  EXPECT_FALSE(uses_hierarchical_policy(5, 2));
}

// 2^24 + 1 is not a float: in float32 both experts weigh 2^24 and the first one gets the replica
// (eplb.py's result); in double the second one is heavier.
TEST(RebalanceExperts, Float32ArithmeticBreaksNearTiesAsTheReference) {
  const LoadMatrix w = {{16777216.0, 16777217.0}};
  EXPECT_EQ(rebalance_experts(w, 3, 1, 1, 1).replica_count[0], (std::vector<int>{1, 2}));
  RebalanceOptions float32;
  float32.float32 = true;
  EXPECT_EQ(rebalance_experts(w, 3, 1, 1, 1, float32).replica_count[0], (std::vector<int>{2, 1}));
}

// A caller's order (the Python package passes torch.sort's) decides which of two tied items is
// visited first; the pack loads do not change.
TEST(BalancedPacking, FollowsTheGivenDescendingOrder) {
  const DescendingOrder ties_reversed = [](const std::vector<double>& weight) {
    std::vector<int> order = stable_descending_order(weight);
    std::reverse(order.begin(), order.end());
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return weight[a] > weight[b]; });
    return order;
  };
  const Packing p = balanced_packing({1, 1, 1, 1}, 2, ties_reversed);
  EXPECT_EQ(p.pack, (std::vector<int>{1, 0, 1, 0}));
  EXPECT_EQ(p.rank_in_pack, (std::vector<int>{1, 1, 0, 0}));
}

TEST(BalancedPacking, RefusesAnOrderThatIsNotADescendingPermutation) {
  const std::vector<double> w = {3, 1, 2, 0};
  const auto with = [&](std::vector<int> order) {
    try {
      balanced_packing(w, 2, [&](const std::vector<double>&) { return order; });
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(with({0, 2, 1}).find("expected visit.size() == weight.size()"), std::string::npos);
  EXPECT_NE(with({0, 2, 2, 3}).find("not a permutation: position 2 holds 2"), std::string::npos);
  EXPECT_NE(with({0, 1, 2, 3}).find("not descending at position 2"), std::string::npos);
  EXPECT_EQ(with({0, 2, 1, 3}), "");
}

TEST(BalancedPacking, HeaviestFirstIntoLightestPackWithRoom) {
  // Sorted: 9(0) 7(2) 5(1) 4(3) 1(4) 1(5). 9->p0, 7->p1, 5->p1(12), 4->p0(13), 1->p1(13),
  // then p1 is full, so the last 1 goes to p0.
  const Packing p = balanced_packing({9, 5, 7, 4, 1, 1}, 2);
  EXPECT_EQ(p.pack, (std::vector<int>{0, 1, 1, 0, 1, 0}));
  EXPECT_EQ(p.rank_in_pack, (std::vector<int>{0, 1, 0, 1, 2, 2}));
}

TEST(BalancedPacking, TiesKeepIndexOrderAndFirstLightestPack) {
  const Packing p = balanced_packing({1, 1, 1, 1}, 2);
  EXPECT_EQ(p.pack, (std::vector<int>{0, 1, 0, 1}));
  EXPECT_EQ(p.rank_in_pack, (std::vector<int>{0, 0, 1, 1}));
}

TEST(BalancedPacking, OneItemPerPackIsIdentity) {
  const Packing p = balanced_packing({1, 5, 3}, 3);
  EXPECT_EQ(p.pack, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(p.rank_in_pack, (std::vector<int>{0, 0, 0}));
}

TEST(ReplicateExperts, HighestLoadPerReplicaFirstIndexOnTies) {
  // 8 -> 2 replicas (4 each); then 6 vs 4 vs 4: 6 gets one; then 4 (index 0 of 8) vs 3 vs 4:
  // the first maximum is expert 0.
  const Replication r = replicate_experts({8, 6, 4}, 6);
  EXPECT_EQ(r.physical_to_logical, (std::vector<int>{0, 1, 2, 0, 1, 0}));
  EXPECT_EQ(r.replica_rank, (std::vector<int>{0, 0, 0, 1, 1, 2}));
  EXPECT_EQ(r.replica_count, (std::vector<int>{3, 2, 1}));
}

std::string error_of(const LoadMatrix& w, int replicas, int groups, int nodes, int gpus) {
  try {
    rebalance_experts(w, replicas, groups, nodes, gpus);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(RebalanceExperts, ErrorsNameTheValues) {
  const LoadMatrix w = kReadmeWeight;  // 12 experts
  std::string e = error_of(w, 16, 5, 1, 8);
  EXPECT_NE(e.find("num_experts=12"), std::string::npos) << e;
  EXPECT_NE(e.find("num_groups=5"), std::string::npos) << e;
  e = error_of(w, 16, 6, 3, 8);
  EXPECT_NE(e.find("num_gpus=8"), std::string::npos) << e;
  EXPECT_NE(e.find("num_nodes=3"), std::string::npos) << e;
  e = error_of(w, 18, 4, 2, 8);
  EXPECT_NE(e.find("num_replicas=18"), std::string::npos) << e;
  EXPECT_NE(e.find("num_gpus=8"), std::string::npos) << e;
  e = error_of(w, 8, 4, 2, 8);
  EXPECT_NE(e.find("num_replicas=8"), std::string::npos) << e;
  EXPECT_NE(e.find("num_experts=12"), std::string::npos) << e;
  e = error_of(w, 16, 0, 2, 8);
  EXPECT_NE(e.find("num_groups=0"), std::string::npos) << e;
  e = error_of({{1, 2}, {3}}, 2, 1, 1, 1);
  EXPECT_NE(e.find("layer 1 has 1"), std::string::npos) << e;
  e = error_of({{1, -2}}, 2, 1, 1, 1);
  EXPECT_NE(e.find("expert 1"), std::string::npos) << e;
  e = error_of({}, 2, 1, 1, 1);
  EXPECT_NE(e.find("at least one layer"), std::string::npos) << e;
  EXPECT_THROW(balanced_packing({1, 2, 3}, 2), std::invalid_argument);
  EXPECT_THROW(replicate_experts({1, 2, 3}, 2), std::invalid_argument);
}

// Properties over random sizes: (layers, groups, nodes, gpus per node, experts per group,
// extra replicas per GPU). Odd sizes included; groups % nodes != 0 exercises the global policy.
using Sizes = std::tuple<int, int, int, int, int, int>;

class RebalanceProperties : public ::testing::TestWithParam<Sizes> {};

TEST_P(RebalanceProperties, HoldOnRandomLoads) {
  const auto [layers, groups, nodes, gpus_per_node, experts_per_group, extra_per_gpu] = GetParam();
  const int experts = groups * experts_per_group;
  const int gpus = nodes * gpus_per_node;
  // Smallest replica count >= experts that the GPUs divide, plus extra slots per GPU.
  const int replicas = ((experts + gpus - 1) / gpus + extra_per_gpu) * gpus;
  for (unsigned seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed * 7919 + experts);
    // Skewed loads (log-normal) with ties (rounded to integers, some zeros).
    std::lognormal_distribution<double> dist(3.0, 1.5);
    LoadMatrix w(layers, std::vector<double>(experts));
    for (auto& row : w)
      for (double& x : row) x = seed % 4 == 3 ? std::round(dist(rng) / 20) : std::round(dist(rng));
    SCOPED_TRACE("seed " + std::to_string(seed));
    const ExpertPlacement p = rebalance_experts(w, replicas, groups, nodes, gpus);
    ASSERT_NO_THROW(p.validate());
    ASSERT_EQ(p.num_physical_experts(), replicas);
    ASSERT_EQ(p.num_logical_experts(), experts);
    ASSERT_EQ(p.slots_per_gpu(), replicas / gpus);
    for (int layer = 0; layer < layers; ++layer) {
      int total = 0;
      for (int e = 0; e < experts; ++e) {
        EXPECT_GE(p.replica_count[layer][e], 1);
        total += p.replica_count[layer][e];
        for (int slot : p.replicas_of(layer, e)) EXPECT_EQ(p.physical_to_logical[layer][slot], e);
      }
      EXPECT_EQ(total, replicas);
      if (uses_hierarchical_policy(groups, nodes)) {
        // A group's experts, with all their replicas, stay on one node.
        const int slots_per_node = replicas / nodes;
        for (int g = 0; g < groups; ++g) {
          const int node = p.replicas_of(layer, g * experts_per_group)[0] / slots_per_node;
          for (int e = g * experts_per_group; e < (g + 1) * experts_per_group; ++e)
            for (int slot : p.replicas_of(layer, e)) EXPECT_EQ(slot / slots_per_node, node);
        }
      }
    }
  }
}

double max_gpu_load(const ExpertPlacement& p, const LoadMatrix& w) {
  const std::vector<double> loads = gpu_loads(p, w)[0];
  return *std::max_element(loads.begin(), loads.end());
}

// NOTE: "never worse than the trivial placement" is not a theorem: greedy packing can lose to a
// placement that happens to be perfect (see the counterexample below), and the hierarchical
// policy keeps each group on one node, which the trivial placement does not. Over 200 random
// skewed loads per size the balancer must win on average; one-GPU-per-node sizes are left out
// because there the GPU load is fixed by the group-to-node packing alone.
TEST_P(RebalanceProperties, BeatTrivialPlacementOnAverage) {
  const auto [layers, groups, nodes, gpus_per_node, experts_per_group, extra_per_gpu] = GetParam();
  if (gpus_per_node == 1 && nodes > 1) GTEST_SKIP() << "GPU load fixed by the node packing";
  const int experts = groups * experts_per_group;
  const int gpus = nodes * gpus_per_node;
  const int replicas = ((experts + gpus - 1) / gpus + extra_per_gpu) * gpus;
  const ExpertPlacement trivial = trivial_placement(1, experts, replicas, gpus);
  double sum_before = 0, sum_after = 0;
  for (unsigned seed = 0; seed < 200; ++seed) {
    std::mt19937 rng(seed);
    std::lognormal_distribution<double> dist(3.0, 1.5);
    LoadMatrix w(1, std::vector<double>(experts));
    for (double& x : w[0]) x = dist(rng);
    sum_before += max_gpu_load(trivial, w);
    sum_after += max_gpu_load(rebalance_experts(w, replicas, groups, nodes, gpus), w);
  }
  if (gpus == 1) {
    EXPECT_DOUBLE_EQ(sum_after, sum_before);  // one GPU holds everything either way
  } else {
    EXPECT_LT(sum_after, sum_before);
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, RebalanceProperties,
                         ::testing::Values(Sizes{1, 1, 1, 1, 4, 0}, Sizes{2, 4, 2, 4, 3, 1},
                                           Sizes{3, 8, 4, 2, 8, 1}, Sizes{2, 3, 2, 2, 5, 2},
                                           Sizes{1, 7, 7, 1, 3, 1}, Sizes{4, 6, 3, 3, 4, 0},
                                           Sizes{2, 5, 1, 7, 2, 3}, Sizes{2, 1, 1, 4, 16, 1},
                                           Sizes{1, 8, 4, 8, 32, 1}));

// At DeepSeek-V3-like sizes the balancer is never worse than the trivial placement on any of
// 100 random skewed load vectors: (experts, replicas, groups, nodes, gpus).
using ProductionSizes = std::tuple<int, int, int, int, int>;
class NeverWorseThanTrivial : public ::testing::TestWithParam<ProductionSizes> {};

TEST_P(NeverWorseThanTrivial, OnEveryRandomLoad) {
  const auto [experts, replicas, groups, nodes, gpus] = GetParam();
  const ExpertPlacement trivial = trivial_placement(1, experts, replicas, gpus);
  for (unsigned seed = 0; seed < 100; ++seed) {
    std::mt19937 rng(seed);
    std::lognormal_distribution<double> dist(3.0, seed % 2 ? 0.3 : 1.5);
    LoadMatrix w(1, std::vector<double>(experts));
    for (double& x : w[0]) x = seed % 3 == 0 ? std::round(dist(rng) / 20) : dist(rng);
    const ExpertPlacement p = rebalance_experts(w, replicas, groups, nodes, gpus);
    EXPECT_LE(max_gpu_load(p, w), max_gpu_load(trivial, w) * (1 + 1e-12)) << "seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, NeverWorseThanTrivial,
                         ::testing::Values(ProductionSizes{256, 288, 8, 4, 32},
                                           ProductionSizes{256, 256, 8, 4, 32},
                                           ProductionSizes{256, 264, 8, 1, 8},
                                           ProductionSizes{32, 40, 1, 1, 8},
                                           ProductionSizes{32, 32, 1, 1, 8}));

// Why the property above is checked statistically: loads {3, 3, 0, 2, 2, 2} on 2 GPUs without
// extra replicas. The trivial placement {3, 3, 0 | 2, 2, 2} is perfect (6, 6); the greedy
// packing visits 3 3 2 2 2 0 and ends with (7, 5).
TEST(RebalanceExperts, GreedyCanLoseToALuckyTrivialPlacement) {
  const LoadMatrix w = {{3, 3, 0, 2, 2, 2}};
  const ExpertPlacement p = rebalance_experts(w, 6, 1, 1, 2);
  EXPECT_DOUBLE_EQ(max_gpu_load(trivial_placement(1, 6, 6, 2), w), 6.0);
  EXPECT_DOUBLE_EQ(max_gpu_load(p, w), 7.0);
}

// Before: num_replicas=2000000000 allocated until the process ran out of memory.
TEST(RebalanceExperts, PlansBeyondTheLimitsAreRefusedBeforeAllocating) {
  const LoadMatrix one_layer = {{1, 2, 3, 4}};
  EXPECT_THROW(rebalance_experts(one_layer, 2000000000, 1, 1, 2), std::invalid_argument);
  const LoadMatrix many_layers(2000, std::vector<double>(4, 1.0));
  EXPECT_THROW(rebalance_experts(many_layers, 4096, 1, 1, 4), std::invalid_argument);
  EXPECT_THROW(rebalance_experts({{1e308, 1}}, 2, 1, 1, 2), std::invalid_argument);
  EXPECT_NO_THROW(rebalance_experts(one_layer, 8, 1, 1, 2));
}

}  // namespace
}  // namespace dualpipe::eplb

#include "dualpipe/eplb/expert_placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "dualpipe/eplb/rebalance.h"

namespace dualpipe::eplb {
namespace {

TEST(TrivialPlacement, ContiguousThenCyclic) {
  // 4 experts on 6 slots over 3 GPUs: slots hold 0 1 | 2 3 | 0 1.
  const ExpertPlacement p = trivial_placement(2, 4, 6, 3);
  EXPECT_NO_THROW(p.validate());
  EXPECT_EQ(p.physical_to_logical[1], (std::vector<int>{0, 1, 2, 3, 0, 1}));
  EXPECT_EQ(p.replica_count[0], (std::vector<int>{2, 2, 1, 1}));
  EXPECT_EQ(p.replicas_of(1, 1), (std::vector<int>{1, 5}));
  EXPECT_EQ(p.replicas_of(1, 3), (std::vector<int>{3}));
  EXPECT_EQ(p.logical_to_physical[0][3], (std::vector<int>{3, -1}));
  EXPECT_EQ(p.gpu_of(5), 2);
  EXPECT_THROW(trivial_placement(1, 4, 6, 4), std::invalid_argument);
  EXPECT_THROW(trivial_placement(1, 4, 3, 1), std::invalid_argument);
}

TEST(GpuLoads, SplitsAnExpertsLoadEvenlyOverItsReplicas) {
  const ExpertPlacement p = trivial_placement(1, 4, 6, 3);
  const auto loads = gpu_loads(p, {{10, 20, 30, 40}});
  EXPECT_EQ(loads[0], (std::vector<double>{5 + 10, 30 + 40, 5 + 10}));
  const auto imbalance = gpu_imbalance(p, {{10, 20, 30, 40}});
  EXPECT_DOUBLE_EQ(imbalance[0], 70.0 / (100.0 / 3));
  EXPECT_DOUBLE_EQ(gpu_imbalance(p, {{0, 0, 0, 0}})[0], 1.0);
  EXPECT_THROW(gpu_loads(p, {{1, 2, 3}}), std::invalid_argument);
  EXPECT_THROW(gpu_loads(p, {{1, 2, 3, 4}, {1, 2, 3, 4}}), std::invalid_argument);
}

TEST(ExpertPlacement, ValidateFindsDisagreeingMaps) {
  ExpertPlacement p = trivial_placement(1, 4, 6, 3);
  p.physical_to_logical[0][4] = 2;  // now expert 2 has two slots, expert 0 one
  try {
    p.validate();
    FAIL() << "expected invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expert 0 has replica_count 2 but 1"), std::string::npos)
        << e.what();
  }
  p = trivial_placement(1, 4, 6, 3);
  p.logical_to_physical[0][2][1] = 0;  // padding must stay -1
  EXPECT_THROW(p.validate(), std::invalid_argument);
  p = trivial_placement(1, 4, 6, 3);
  p.num_gpus = 4;
  EXPECT_THROW(p.validate(), std::invalid_argument);
}

TEST(ExpertPlacement, ReplicasOfOutOfRangeThrows) {
  const ExpertPlacement p = trivial_placement(1, 4, 4, 2);
  EXPECT_THROW(p.replicas_of(1, 0), std::out_of_range);
  EXPECT_THROW(p.replicas_of(0, 4), std::out_of_range);
  EXPECT_THROW(p.replicas_of(0, -1), std::out_of_range);
}

TEST(ExpertPlacement, FromPhysicalToLogicalDerivesTheOtherMaps) {
  const ExpertPlacement trivial = trivial_placement(2, 4, 6, 3);
  const ExpertPlacement back =
      placement_from_physical_to_logical(trivial.physical_to_logical, 4, 3);
  EXPECT_EQ(back.logical_to_physical, trivial.logical_to_physical);
  EXPECT_EQ(back.replica_count, trivial.replica_count);
  const ExpertPlacement planned =
      rebalance_experts({{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86}}, 16, 4, 2, 8);
  const ExpertPlacement rebuilt =
      placement_from_physical_to_logical(planned.physical_to_logical, 12, 8);
  EXPECT_EQ(rebuilt.replica_count, planned.replica_count);
  for (int e = 0; e < 12; ++e) {
    std::vector<int> want = planned.replicas_of(0, e), got = rebuilt.replicas_of(0, e);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << "expert " << e;
  }
  try {
    placement_from_physical_to_logical({{0, 1, 1, 0}}, 3, 2);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expert 2 has replica_count 0"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(placement_from_physical_to_logical({{0, 5}}, 3, 1), std::invalid_argument);
  EXPECT_THROW(placement_from_physical_to_logical({{0, 1, 2}}, 3, 2), std::invalid_argument);
}

}  // namespace
}  // namespace dualpipe::eplb

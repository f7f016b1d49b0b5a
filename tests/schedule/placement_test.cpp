#include "dualpipe/schedule/placement.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace dualpipe::schedule {
namespace {

TEST(PlacementTest, BidirectionalPutsMirrorStagesOnOneRank) {
  Placement placement = Placement::bidirectional(4);
  EXPECT_EQ(placement.rank_of(0, 1), 1);
  EXPECT_EQ(placement.rank_of(1, 1), 2);
  std::vector<StageId> on_rank_0 = placement.stages_on(0);
  ASSERT_EQ(on_rank_0.size(), 2u);
  EXPECT_EQ(on_rank_0[0], (StageId{0, 0}));
  EXPECT_EQ(on_rank_0[1], (StageId{1, 3}));
  EXPECT_EQ(placement.stage_at(3, 1), (StageId{1, 0}));
}

TEST(PlacementTest, VShapeFoldsStagesBack) {
  Placement placement = Placement::v_shape(3);
  EXPECT_EQ(placement.num_stages(), 6);
  EXPECT_EQ(placement.at(0, 2).rank, 2);
  EXPECT_EQ(placement.at(0, 3).rank, 2);
  EXPECT_EQ(placement.at(0, 3).slot, 1);
  EXPECT_EQ(placement.at(0, 5).rank, 0);
  EXPECT_EQ(placement.num_slots(1), 2);
}

TEST(PlacementTest, RoundRobinInterleaves) {
  Placement placement = Placement::round_robin(2, 6);
  EXPECT_EQ(placement.at(0, 5).rank, 1);
  EXPECT_EQ(placement.at(0, 5).slot, 2);
  EXPECT_EQ(placement.num_slots(0), 3);
}

TEST(PlacementTest, RejectsBadLocationsWithValues) {
  EXPECT_THROW(Placement(2, 1, 2, {{0, 0}, {0, 0}}), std::invalid_argument);
  EXPECT_THROW(Placement(2, 1, 2, {{0, 0}, {2, 0}}), std::invalid_argument);
  EXPECT_THROW(Placement(2, 1, 2, {{0, 0}}), std::invalid_argument);
  try {
    Placement::bidirectional(2).at(2, 0);
    FAIL() << "expected out_of_range";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find("direction=2"), std::string::npos);
  }
}

}  // namespace
}  // namespace dualpipe::schedule

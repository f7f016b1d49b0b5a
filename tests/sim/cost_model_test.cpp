#include "dualpipe/sim/cost_model.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace dualpipe::sim {
namespace {

TEST(CostModel, ParsesAnySubsetOverDefaults) {
  CostModel costs = parse_cost_model("FB=2.5,comm=0.25,F=1");
  EXPECT_DOUBLE_EQ(costs.forward_backward, 2.5);
  EXPECT_DOUBLE_EQ(costs.comm, 0.25);
  EXPECT_DOUBLE_EQ(costs.backward, 2);
  EXPECT_DOUBLE_EQ(costs.weight, 1);
  EXPECT_EQ(to_string(parse_cost_model("")), "F=1,B=2,W=1,FB=3,comm=0");
  CostModel scaled = parse_cost_model("scale=1:2.5:1");
  ASSERT_EQ(scaled.stage_scale.size(), 3u);
  EXPECT_DOUBLE_EQ(scaled.stage_scale[1], 2.5);
  EXPECT_EQ(parse_cost_model(to_string(scaled)).stage_scale, scaled.stage_scale);
}

TEST(CostModel, RejectsMalformedAndNegative) {
  for (const char* bad : {"F", "F=", "F=x", "F=1,,B=2", "G=1", "F=1;B=2", "F=-1", "comm=-0.5",
                          "W=3", "F=nan", "F=inf", "=1", "scale=1:-1"}) {
    EXPECT_THROW(parse_cost_model(bad), std::invalid_argument) << bad;
  }
}

TEST(CostModel, OpCosts) {
  using schedule::Op;
  CostModel costs = parse_cost_model("F=1,B=3,W=1,FB=3.5");
  EXPECT_DOUBLE_EQ(op_cost(Op::forward(0, 0, 0), costs), 1);
  EXPECT_DOUBLE_EQ(op_cost(Op::backward(0, 0, 0), costs), 3);
  EXPECT_DOUBLE_EQ(op_cost(Op::backward(0, 0, 0, true), costs), 2);
  EXPECT_DOUBLE_EQ(op_cost(Op::weight(0, 0, 0), costs), 1);
  EXPECT_DOUBLE_EQ(op_cost(Op::forward_backward(0, 0, 1, 1, 1, 0), costs), 3.5);
  EXPECT_DOUBLE_EQ(op_cost(Op::send_grad(0, 0, 0, 1), costs), 0);
  costs.stage_scale = {1, 2};
  // FB of forward stage 0 (x1) and backward stage 1 (x2): 3.5 * (1*1 + 3*2) / 4.
  EXPECT_DOUBLE_EQ(op_cost(Op::forward_backward(0, 0, 1, 1, 1, 0), costs), 3.5 * 7 / 4);
  EXPECT_DOUBLE_EQ(op_cost(Op::backward(0, 1, 0, true), costs), 4);
}

}  // namespace
}  // namespace dualpipe::sim

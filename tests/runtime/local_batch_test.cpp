#include "dualpipe/runtime/local_batch.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "dualpipe/runtime/pipeline.h"

namespace dualpipe::runtime {
namespace {

// Row i of the global batch holds the value i.
at::Tensor numbered_rows(int64_t rows) {
  return at::arange(rows, at::kFloat).reshape({rows, 1});
}

TEST(LocalBatchTest, DualPipeSplitsTheBatchInHalvesWithCrossedLabels) {
  const at::Tensor x = numbered_rows(16), y = numbered_rows(16) + 100;
  const LocalBatch first = local_batch("dualpipe", 4, 0, 8, {x}, {y});
  const LocalBatch last = local_batch("dualpipe", 4, 3, 8, {x}, {y});
  const LocalBatch middle = local_batch("dualpipe", 4, 1, 8, {x}, {y});
  ASSERT_EQ(first.inputs.size(), 1u);
  EXPECT_TRUE(at::equal(first.inputs[0], x.narrow(0, 0, 8)));
  EXPECT_TRUE(at::equal(first.labels[0], y.narrow(0, 8, 8)));
  EXPECT_TRUE(at::equal(last.inputs[0], x.narrow(0, 8, 8)));
  EXPECT_TRUE(at::equal(last.labels[0], y.narrow(0, 0, 8)));
  EXPECT_EQ(first.loss_microbatches, (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(last.loss_microbatches, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(middle.inputs.empty());
  EXPECT_TRUE(middle.labels.empty());
  EXPECT_TRUE(middle.loss_microbatches.empty());
}

TEST(LocalBatchTest, SingleDirectionSchedulesFeedRankZeroAndLabelTheLastRank) {
  const at::Tensor x = numbered_rows(6), y = numbered_rows(6) + 100;
  for (const char* name : {"1f1b", "zb1p", "gpipe"}) {
    const LocalBatch first = local_batch(name, 3, 0, 3, {x}, {y});
    const LocalBatch last = local_batch(name, 3, 2, 3, {x}, {y});
    EXPECT_TRUE(at::equal(first.inputs.at(0), x)) << name;
    EXPECT_TRUE(first.labels.empty()) << name;
    EXPECT_TRUE(last.inputs.empty()) << name;
    EXPECT_TRUE(at::equal(last.labels.at(0), y)) << name;
    EXPECT_EQ(last.loss_microbatches, (std::vector<int>{0, 1, 2})) << name;
  }
  const LocalBatch v = local_batch("dualpipev", 2, 0, 4, {x.narrow(0, 0, 4)}, {y.narrow(0, 0, 4)});
  EXPECT_TRUE(at::equal(v.inputs.at(0), x.narrow(0, 0, 4)));
  EXPECT_TRUE(at::equal(v.labels.at(0), y.narrow(0, 0, 4)));
}

TEST(LocalBatchTest, EveryInputTensorIsSplitTheSameWay) {
  const at::Tensor x = numbered_rows(8), mask = numbered_rows(8).to(at::kLong);
  const LocalBatch last = local_batch("dualpipe", 2, 1, 4, {x, mask});
  ASSERT_EQ(last.inputs.size(), 2u);
  EXPECT_TRUE(at::equal(last.inputs[1], mask.narrow(0, 4, 4)));
  EXPECT_TRUE(last.labels.empty());  // no labels given (inference)
}

TEST(LocalBatchTest, ErrorsNameTheTensorAndTheSizes) {
  const at::Tensor x = numbered_rows(10);
  try {
    local_batch("dualpipe", 2, 0, 4, {x});
    FAIL() << "10 rows accepted for 4 micro-batches";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("inputs[0] has batch size 10, which does not split into "
                                         "num_microbatches=4"),
              std::string::npos)
        << e.what();
  }
  try {
    local_batch("dualpipe", 2, 0, 3, {numbered_rows(6)});
    FAIL() << "odd micro-batch count accepted for two directions";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of the schedule's 2 direction(s), got "
                                         "num_microbatches=3"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(local_batch("dualpipe", 2, 2, 4, {numbered_rows(8)}), std::out_of_range);
}

TEST(PipelineStagesForTest, NamesTheModelStagesOfEachRank) {
  const std::vector<schedule::StageId> r1 = Pipeline::stages_for("dualpipe", 4, 1);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[0], (schedule::StageId{0, 1}));
  EXPECT_EQ(r1[1], (schedule::StageId{1, 2}));
  const std::vector<schedule::StageId> v = Pipeline::stages_for("dualpipev", 3, 2);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].stage, 2);
  EXPECT_EQ(v[1].stage, 3);
  EXPECT_EQ(Pipeline::stages_for("1f1b", 3, 2), (std::vector<schedule::StageId>{{0, 2}}));
  EXPECT_THROW(Pipeline::stages_for("dualpipe", 4, 4), std::out_of_range);
  EXPECT_THROW(Pipeline::stages_for("dualpipe", 5, 0), std::invalid_argument);
}

TEST(PipelineStagesForTest, WhichRanksTakeInputsAndLabels) {
  EXPECT_TRUE(Pipeline::takes_inputs("dualpipe", 4, 0));
  EXPECT_TRUE(Pipeline::takes_labels("dualpipe", 4, 0));
  EXPECT_TRUE(Pipeline::takes_inputs("dualpipe", 4, 3));
  EXPECT_FALSE(Pipeline::takes_inputs("dualpipe", 4, 2));
  EXPECT_FALSE(Pipeline::takes_labels("dualpipe", 4, 1));
  EXPECT_TRUE(Pipeline::takes_labels("dualpipev", 4, 0));
  EXPECT_FALSE(Pipeline::takes_labels("dualpipev", 4, 3));
  EXPECT_FALSE(Pipeline::takes_labels("zb1p", 4, 0));
  EXPECT_TRUE(Pipeline::takes_labels("zb1p", 4, 3));
}

}  // namespace
}  // namespace dualpipe::runtime

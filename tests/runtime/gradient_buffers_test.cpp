#include "dualpipe/runtime/gradient_buffers.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace dualpipe::runtime {
namespace {

std::vector<at::Tensor> mixed_parameters() {
  // fp32, fp64 (no gradient yet), fp32, int-free: three parameters in two dtypes.
  std::vector<at::Tensor> params = {at::zeros({2, 3}, at::kFloat), at::zeros({4}, at::kDouble),
                                    at::zeros({5}, at::kFloat)};
  params[0].mutable_grad() = at::arange(6, at::kFloat).view({2, 3});
  params[2].mutable_grad() = at::full({5}, 0.5, at::kFloat);
  return params;
}

TEST(GradientBuffers, OneBucketPerDtypeInParameterOrderWithZerosForMissingGradients) {
  const std::vector<at::Tensor> params = mixed_parameters();
  const FlatGradients flat = flatten_gradients(params);
  ASSERT_EQ(flat.buckets.size(), 2u);
  EXPECT_EQ(flat.buckets[0].scalar_type(), at::kFloat);
  EXPECT_EQ(flat.buckets[1].scalar_type(), at::kDouble);
  EXPECT_EQ(flat.buckets[0].numel(), 11);
  EXPECT_EQ(flat.buckets[1].numel(), 4);
  EXPECT_EQ(flat.bucket_of, (std::vector<int>{0, 1, 0}));
  EXPECT_EQ(flat.offset_of, (std::vector<int64_t>{0, 0, 6}));
  EXPECT_TRUE(flat.buckets[0].narrow(0, 0, 6).equal(at::arange(6, at::kFloat)));
  EXPECT_TRUE(flat.buckets[1].equal(at::zeros({4}, at::kDouble)));
}

TEST(GradientBuffers, UnflattenAddsOrAssignsAndCreatesMissingGradients) {
  std::vector<at::Tensor> params = mixed_parameters();
  FlatGradients flat = flatten_gradients(params);
  for (at::Tensor& bucket : flat.buckets) bucket.fill_(2);
  unflatten_gradients(params, flat, GradientWrite::kAdd);
  EXPECT_TRUE(params[0].grad().equal(at::arange(6, at::kFloat).view({2, 3}) + 2));
  EXPECT_TRUE(params[1].grad().equal(at::full({4}, 2.0, at::kDouble)));
  EXPECT_TRUE(params[2].grad().equal(at::full({5}, 2.5, at::kFloat)));
  unflatten_gradients(params, flat, GradientWrite::kAssign);
  EXPECT_TRUE(params[0].grad().equal(at::full({2, 3}, 2.0, at::kFloat)));
  EXPECT_TRUE(params[2].grad().equal(at::full({5}, 2.0, at::kFloat)));
}

TEST(GradientBuffers, ReduceThatThrowsLeavesGradientsUnchanged) {
  std::vector<at::Tensor> params = mixed_parameters();
  EXPECT_THROW(reduce_gradients(params,
                                [](std::vector<at::Tensor>& buckets) {
                                  for (at::Tensor& b : buckets) b.mul_(10);
                                  throw std::runtime_error("peer gone");
                                }),
               std::runtime_error);
  EXPECT_TRUE(params[0].grad().equal(at::arange(6, at::kFloat).view({2, 3})));
  EXPECT_FALSE(params[1].grad().defined());
  reduce_gradients(params, [](std::vector<at::Tensor>& buckets) {
    for (at::Tensor& b : buckets) b.mul_(10);
  });
  EXPECT_TRUE(params[0].grad().equal(at::arange(6, at::kFloat).view({2, 3}) * 10));
  EXPECT_TRUE(params[1].grad().equal(at::zeros({4}, at::kDouble)));
}

TEST(GradientBuffers, LayoutOfOtherParametersIsRefusedWithCounts) {
  std::vector<at::Tensor> params = mixed_parameters();
  const FlatGradients flat = flatten_gradients(params);
  params.pop_back();
  try {
    unflatten_gradients(params, flat, GradientWrite::kAdd);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("describe 3 parameters, got 2"), std::string::npos)
        << e.what();
  }
}

TEST(GradientBuffers, TakeAndRestoreAddEarlierGradientsOrDropTheNewOnes) {
  std::vector<at::Tensor> params = mixed_parameters();
  std::vector<at::Tensor> earlier = take_gradients(params);
  EXPECT_FALSE(params[0].grad().defined());
  params[0].mutable_grad() = at::ones({2, 3}, at::kFloat);
  params[1].mutable_grad() = at::ones({4}, at::kDouble);
  restore_gradients(params, earlier, /*drop_new=*/false);
  EXPECT_TRUE(params[0].grad().equal(at::arange(6, at::kFloat).view({2, 3}) + 1));
  EXPECT_TRUE(params[1].grad().equal(at::ones({4}, at::kDouble)));
  EXPECT_TRUE(params[2].grad().equal(at::full({5}, 0.5, at::kFloat)));

  earlier = take_gradients(params);
  params[1].mutable_grad() = at::full({4}, 7.0, at::kDouble);
  restore_gradients(params, earlier, /*drop_new=*/true);
  EXPECT_TRUE(params[1].grad().equal(at::ones({4}, at::kDouble)));
}

}  // namespace
}  // namespace dualpipe::runtime

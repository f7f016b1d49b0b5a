#include "dualpipe/runtime/process_grid.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <exception>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <vector>

namespace dualpipe::runtime {
namespace {

TEST(ProcessGridTest, LayoutPipelineFastest) {
  // PP=4, EP=1, DP=2: pipelines {0,1,2,3} and {4,5,6,7}.
  const ProcessGrid grid({4, 1, 2}, 6, 8);
  EXPECT_EQ(grid.pp_rank(), 2);
  EXPECT_EQ(grid.ep_rank(), 0);
  EXPECT_EQ(grid.dp_rank(), 1);
  EXPECT_EQ(grid.pipeline_ranks(), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(grid.dp_ranks(), (std::vector<int>{2, 6}));
  EXPECT_EQ(grid.ep_ranks(), (std::vector<int>{6}));
  EXPECT_EQ(grid.mirror_pp_rank(), 1);
  EXPECT_EQ(grid.mirror_rank(), 5);
}

TEST(ProcessGridTest, LayoutAllThreeDimensions) {
  // PP=2, EP=3, DP=2: rank = (dp * 3 + ep) * 2 + pp.
  for (int rank = 0; rank < 12; ++rank) {
    const ProcessGrid grid({2, 3, 2}, rank, 12);
    EXPECT_EQ(grid.world_rank(grid.pp_rank(), grid.ep_rank(), grid.dp_rank()), rank);
  }
  const ProcessGrid grid({2, 3, 2}, 9, 12);  // pp 1, ep 1, dp 1
  EXPECT_EQ(grid.pp_rank(), 1);
  EXPECT_EQ(grid.ep_rank(), 1);
  EXPECT_EQ(grid.dp_rank(), 1);
  EXPECT_EQ(grid.pipeline_ranks(), (std::vector<int>{8, 9}));
  EXPECT_EQ(grid.ep_ranks(), (std::vector<int>{7, 9, 11}));
  EXPECT_EQ(grid.dp_ranks(), (std::vector<int>{3, 9}));
  EXPECT_EQ(grid.mirror_rank(), 8);
}

TEST(ProcessGridTest, OddPipelineMiddleRankIsItsOwnMirror) {
  const ProcessGrid grid({3, 1, 1}, 1, 3);
  EXPECT_EQ(grid.mirror_rank(), 1);
}

TEST(ProcessGridTest, RejectsInconsistentSizes) {
  try {
    ProcessGrid({2, 2, 2}, 0, 6);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("PP=2, EP=2, DP=2"), std::string::npos) << message;
    EXPECT_NE(message.find("world_size=6"), std::string::npos) << message;
  }
  EXPECT_THROW(ProcessGrid({0, 1, 1}, 0, 0), std::invalid_argument);
  EXPECT_THROW(ProcessGrid({2, 1, 1}, 2, 2), std::invalid_argument);
  EXPECT_THROW(ProcessGrid({2, 1, 1}, 0, 2).world_rank(2, 0, 0), std::invalid_argument);
}

// What one rank saw: the allreduced (sum of world rank + 1) in each of its groups.
struct GroupSums {
  double pipeline = 0, ep = 0, dp = 0, mirror = -1;
};

double allreduce(const CommunicatorPtr& group, int world_rank) {
  std::vector<at::Tensor> tensors = {
      at::full({3}, static_cast<double>(world_rank + 1), at::kDouble)};
  group->allreduce(tensors)->wait();
  return tensors[0][1].item<double>();
}

double expected_sum(const std::vector<int>& ranks) {
  double sum = 0;
  for (int r : ranks) sum += r + 1;
  return sum;
}

class ProcessGridGroupsTest : public ::testing::TestWithParam<GridSizes> {};

TEST_P(ProcessGridGroupsTest, AllreduceInsideEachGroupGivesTheGroupSum) {
  const GridSizes sizes = GetParam();
  const int world_size = sizes.pp * sizes.ep * sizes.dp;
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<GroupSums> sums(world_size);
  std::vector<std::exception_ptr> errors(world_size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        CommunicatorOptions options;
        options.timeout = std::chrono::seconds(20);
        ProcessGrid grid(sizes, rank, world_size);
        grid.connect(store, options);
        sums[rank].pipeline = allreduce(grid.pipeline_group(), rank);
        sums[rank].ep = allreduce(grid.ep_group(), rank);
        sums[rank].dp = allreduce(grid.dp_group(), rank);
        if (grid.mirror_group()) sums[rank].mirror = allreduce(grid.mirror_group(), rank);
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int rank = 0; rank < world_size; ++rank) {
    if (errors[rank]) std::rethrow_exception(errors[rank]);
    const ProcessGrid grid(sizes, rank, world_size);
    EXPECT_EQ(sums[rank].pipeline, expected_sum(grid.pipeline_ranks())) << "rank " << rank;
    EXPECT_EQ(sums[rank].ep, expected_sum(grid.ep_ranks())) << "rank " << rank;
    EXPECT_EQ(sums[rank].dp, expected_sum(grid.dp_ranks())) << "rank " << rank;
    const double mirror =
        grid.mirror_rank() == rank ? -1 : expected_sum({rank, grid.mirror_rank()});
    EXPECT_EQ(sums[rank].mirror, mirror) << "rank " << rank;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, ProcessGridGroupsTest,
                         ::testing::Values(GridSizes{2, 1, 2}, GridSizes{2, 2, 1},
                                           GridSizes{4, 1, 1}, GridSizes{3, 1, 2},
                                           GridSizes{2, 2, 2}),
                         [](const auto& info) {
                           return "pp" + std::to_string(info.param.pp) + "_ep" +
                                  std::to_string(info.param.ep) + "_dp" +
                                  std::to_string(info.param.dp);
                         });

}  // namespace
}  // namespace dualpipe::runtime

#include "dualpipe/runtime/process_group.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <vector>

namespace dualpipe::runtime {
namespace {

TEST(ProcessGroupTest, GlooAllreduceAcrossThreads) {
  constexpr int kSize = 3;
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<double> sums(kSize);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kSize; ++rank) {
    threads.emplace_back([&, rank] {
      CommunicatorOptions options;
      options.timeout = std::chrono::seconds(20);
      CommunicatorPtr comm = make_communicator(store, rank, kSize, options);
      std::vector<at::Tensor> tensors = {torch::full({4}, static_cast<double>(rank + 1))};
      comm->allreduce(tensors)->wait();
      sums[rank] = tensors[0].sum().item<double>();
    });
  }
  for (auto& t : threads) t.join();
  for (double s : sums) EXPECT_DOUBLE_EQ(s, 4 * (1 + 2 + 3));
}

TEST(ProcessGroupTest, RejectsRankOutOfRange) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  EXPECT_THROW(make_communicator(store, 2, 2), std::invalid_argument);
}

}  // namespace
}  // namespace dualpipe::runtime

#include "dualpipe/runtime/collective_wait.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "dualpipe/runtime/peers_waited_for.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

TEST(PeersWaitedForTest, ClauseIsReadBack) {
  const std::string message = with_peers_waited_for(
      "rank 3 waiting failed: Operation timed out!\nframe #0", {{0, "10.1.0.1"}, {2, ""}});
  EXPECT_EQ(message,
            "rank 3 waiting failed: Operation timed out!; peers it waited for: rank 0 (host "
            "10.1.0.1), rank 2\nframe #0");
  EXPECT_EQ(peers_waited_for(message), (std::vector<int>{0, 2}));
  EXPECT_EQ(peers_waited_for("rank 1 failed: an exception thrown on purpose"), std::vector<int>{});
  EXPECT_EQ(with_peers_waited_for("no peers", {}), "no peers");
}

TEST(CollectiveWaitTest, MessageNamesTheGroupAndPeersOnOtherHostsFirst) {
  const GroupMembers members =
      group_members("world", {0, 1, 2, 3}, {"10.1.0.1", "10.1.0.1", "10.1.0.2", "10.1.0.2"});
  EXPECT_EQ(collective_failure_message(members, 3, 4, "allreduce of the step's losses",
                                       std::chrono::milliseconds(10000), "Operation timed out!"),
            "rank 3 waiting for the allreduce of the step's losses with ranks 0, 1, 2, 3 (group "
            "world, timeout 10000 ms) failed: Operation timed out!; peers it waited for: rank 0 "
            "(host 10.1.0.1), rank 1 (host 10.1.0.1), rank 2 (host 10.1.0.2)");
  // One host: no host names. Unknown members: group ranks, said so.
  EXPECT_EQ(collective_failure_message(group_members("mirror", {0, 3}, {}), 1, 2, "allreduce of x",
                                       std::nullopt, "boom"),
            "rank 3 waiting for the allreduce of x with ranks 0, 3 (group mirror) failed: boom; "
            "peers it waited for: rank 0");
  EXPECT_EQ(collective_failure_message({}, 0, 2, "allgather of y", std::nullopt, "boom"),
            "rank 0 waiting for the allgather of y with ranks 0, 1 (group ranks) failed: boom; "
            "peers it waited for: rank 1");
}

TEST(CollectiveWaitTest, NamesThePeerThatNeverJoined) {
  // Rank 1 (world rank 5) never joins the allreduce: rank 0 (world rank 2) gives up and says who
  // it waited for.
  std::atomic<bool> rank0_done{false};
  std::string message;
  const auto errors = testing::run_ranks(
      2,
      [&](int rank, CommunicatorPtr comm) {
        if (rank == 1) {
          while (!rank0_done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
          return;
        }
        std::vector<at::Tensor> tensors = {torch::ones({4})};
        try {
          wait_collective(comm->allreduce(tensors), *comm,
                          group_members("grid/mirror/dp0.ep0.pp0", {2, 5}, {}), "allreduce of x",
                          std::chrono::milliseconds(300));
        } catch (const std::runtime_error& e) {
          message = e.what();
        }
        rank0_done = true;
      },
      std::chrono::seconds(2));
  for (const auto& error : errors) EXPECT_EQ(testing::message_of(error), "");
  EXPECT_EQ(message.rfind("rank 2 waiting for the allreduce of x with ranks 2, 5 (group "
                          "grid/mirror/dp0.ep0.pp0, timeout 300 ms) failed: ",
                          0),
            0u)
      << message;
  EXPECT_EQ(peers_waited_for(message), std::vector<int>{5}) << message;
}

}  // namespace
}  // namespace dualpipe::runtime

// The p2p channel on its own: items of a stream after the first arrive through the predicted
// receives, items whose shapes break the prediction still arrive whole and with their own
// specs (never a buffer of another size), whatever order the receiver waits in.
#include "dualpipe/runtime/p2p_channel.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

constexpr auto kTimeout = std::chrono::seconds(20);

ItemKey activation(int microbatch) {
  return {ItemKind::kActivation, {0, 0, microbatch}};
}

ItemKey gradient(int microbatch) {
  return {ItemKind::kGrad, {1, 2, microbatch}};
}

// What the sender sends for micro-batch m of each stream: shapes change at m = 2 and m = 4
// (back to the first shape), dtype at m = 5; the gradient stream carries an undefined slot.
TensorList activation_payload(int m) {
  const int64_t rows = m == 2 ? 2 : m == 3 ? 6 : 4;
  at::Tensor values = at::arange(rows * 8, at::kFloat).view({rows, 8}) + 100 * m;
  if (m == 5) values = values.to(at::kDouble);
  return {values, at::full({3}, m, at::kLong)};
}

TensorList gradient_payload(int m) {
  return {at::full({2, 5}, 0.5 * m), at::Tensor()};
}

TEST(P2PChannelTest, PredictedAndUnpredictedItemsArriveWholeInAnyWaitOrder) {
  constexpr int kItems = 7;
  const auto errors = testing::run_ranks(2, [](int rank, CommunicatorPtr comm) {
    P2PChannel channel(comm, rank, {0, 1}, 4, kItems, kTimeout, nullptr);
    if (rank == 0) {
      for (int m = 0; m < kItems; ++m) {
        channel.send(activation(m), 1, activation_payload(m));
        channel.send(gradient(m), 1, gradient_payload(m));
        channel.progress();
      }
      channel.wait_sends();
      return;
    }
    for (int m = 0; m < kItems; ++m) {
      channel.post_recv(activation(m), 0);
      channel.post_recv(gradient(m), 0);
    }
    // Later items before earlier ones, and the gradients last.
    for (int m : {3, 0, 6, 1, 2, 5, 4}) {
      std::vector<TensorSpec> specs;
      const TensorList got = channel.wait_recv(activation(m), &specs);
      const TensorList want = activation_payload(m);
      ASSERT_EQ(got.size(), 2u) << m;
      EXPECT_TRUE(got[0].equal(want[0])) << "micro-batch " << m;
      EXPECT_TRUE(got[1].equal(want[1])) << "micro-batch " << m;
      EXPECT_EQ(specs[0], TensorSpec::of(want[0])) << m;
    }
    for (int m = 0; m < kItems; ++m) {
      const TensorList got = channel.wait_recv(gradient(m));
      ASSERT_EQ(got.size(), 2u);
      EXPECT_TRUE(got[0].equal(gradient_payload(m)[0])) << m;
      EXPECT_FALSE(got[1].defined());
    }
    EXPECT_EQ(channel.num_pending_recvs(), 0u);
    channel.wait_sends();
  });
  for (const auto& e : errors) EXPECT_EQ(testing::message_of(e), "");
}

TEST(P2PChannelTest, SendToADeadPeerIsReportedOnTheCallingThread) {
  std::promise<void> peer_gone;
  std::shared_future<void> gone = peer_gone.get_future().share();
  const auto errors = testing::run_ranks(
      2,
      [&](int rank, CommunicatorPtr comm) {
        if (rank == 1) {
          comm.reset();  // the only reference: the communicator and its connections close
          peer_gone.set_value();
          return;
        }
        // Rank 1 is gone before anything is sent. Whether the failure then shows at a send or at
        // wait_sends, it must surface here, on the calling thread, naming both ranks.
        if (gone.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
          throw std::runtime_error("rank 1 never dropped its communicator");
        }
        P2PChannel channel(comm, rank, {0, 1}, 4, 4, std::chrono::seconds(5), nullptr);
        for (int m = 0; m < 4; ++m) channel.send(activation(m), 1, activation_payload(m));
        channel.wait_sends();
      },
      std::chrono::seconds(5));
  const std::string message = testing::message_of(errors[0]);
  EXPECT_NE(message.find("rank 0"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  EXPECT_EQ(testing::message_of(errors[1]), "");
}

// With EP or DP, pipeline ranks are not world ranks: a failed receive names both, and the clause
// the launcher reads names the peer's world rank.
TEST(P2PChannelTest, AFailedReceiveNamesPipelineAndWorldRanks) {
  std::atomic<bool> receiver_done{false};
  std::string message;
  const auto errors = testing::run_ranks(
      2,
      [&](int rank, CommunicatorPtr comm) {
        if (rank == 1) {  // never sends
          while (!receiver_done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
          return;
        }
        P2PChannel channel(comm, rank, {0, 1}, 4, 4, std::chrono::milliseconds(300), nullptr,
                           at::kCPU, group_members("grid/pp/dp0.ep1", {3, 7}, {}));
        channel.post_recv(activation(0), 1);
        try {
          channel.wait_recv(activation(0));
        } catch (const std::runtime_error& e) {
          message = e.what();
        }
        receiver_done = true;
      },
      std::chrono::seconds(2));
  for (const auto& error : errors) EXPECT_EQ(testing::message_of(error), "");
  EXPECT_EQ(message.rfind("pipeline rank 0 (world rank 3) waiting for a header from pipeline rank "
                          "1 (world rank 7) (",
                          0),
            0u)
      << message;
  EXPECT_EQ(peers_waited_for(message), std::vector<int>{7}) << message;
}

}  // namespace
}  // namespace dualpipe::runtime

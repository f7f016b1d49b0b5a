#include "dualpipe/schedule/item.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace dualpipe::schedule {
namespace {

TEST(Item, ComputeHalvesConsumeAndProduceTheNeighboursItems) {
  EXPECT_FALSE(forward_input(0, 0, 3));
  EXPECT_EQ(*forward_input(1, 2, 3), (Item{ItemKind::kActivation, 1, 1, 3}));
  EXPECT_EQ(*forward_output(1, 2, 3, 4), (Item{ItemKind::kActivation, 1, 2, 3}));
  EXPECT_FALSE(forward_output(1, 3, 3, 4));
  EXPECT_EQ(*backward_input(0, 2, 5, 4), (Item{ItemKind::kGrad, 0, 3, 5}));
  EXPECT_FALSE(backward_input(0, 3, 5, 4));
  EXPECT_EQ(*backward_output(0, 2, 5), (Item{ItemKind::kGrad, 0, 2, 5}));
  EXPECT_FALSE(backward_output(0, 0, 5));
  EXPECT_EQ(consumer_stage(Item{ItemKind::kActivation, 0, 2, 0}), 3);
  EXPECT_EQ(consumer_stage(Item{ItemKind::kGrad, 0, 2, 0}), 1);
}

TEST(Item, SendAndReceiveNameTheSameItemAndFindTheirPeersInThePlacement) {
  const Placement placement = Placement::bidirectional(4);  // (1, s) lives on rank 3 - s
  const Item activation{ItemKind::kActivation, 1, 1, 7};    // from rank 2 to rank 1
  const Op send = send_op(activation, 1), recv = recv_op(activation, 2);
  EXPECT_EQ(send, Op::send_activation(1, 1, 7, 1));
  EXPECT_EQ(recv, Op::recv_activation(1, 1, 7, 2));
  EXPECT_EQ(item_of(send), activation);
  EXPECT_EQ(item_of(recv), activation);
  EXPECT_EQ(producer_rank(activation, placement), 2);
  EXPECT_EQ(consumer_rank(activation, placement), 1);
  EXPECT_EQ(peer_of(send, placement), 1);
  EXPECT_EQ(peer_of(recv, placement), 2);
  const Item grad{ItemKind::kGrad, 0, 3, 0};  // from rank 3 to rank 2
  EXPECT_EQ(peer_of(send_op(grad, 2), placement), 2);
  EXPECT_EQ(peer_of(recv_op(grad, 3), placement), 3);
  EXPECT_THROW(item_of(Op::forward(0, 0, 0)), std::invalid_argument);
}

}  // namespace
}  // namespace dualpipe::schedule

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "dualpipe/schedule/communication.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"

namespace dualpipe::schedule {
namespace {

struct Size {
  std::string name;
  int num_ranks;
  int num_microbatches;
};

std::string size_name(const testing::TestParamInfo<Size>& info) {
  auto number = [](int n) { return n < 0 ? "neg" + std::to_string(-n) : std::to_string(n); };
  std::string name = info.param.name;
  std::replace(name.begin(), name.end(), '-', '_');  // gtest names: no '-'
  return name + "_R" + number(info.param.num_ranks) + "_M" + number(info.param.num_microbatches);
}

// Every size the references (and our baselines) accept, odd ones included.
std::vector<Size> accepted_sizes() {
  std::vector<Size> sizes;
  for (int r = 2; r <= 10; r += 2) {
    for (int c = 2 * r; c <= 3 * r + 4; c += 2) sizes.push_back({"dualpipe", r, c});
  }
  for (int r = 1; r <= 8; ++r) {
    for (int c = 2 * r; c <= 3 * r + 3; ++c) sizes.push_back({"dualpipev", r, c});
  }
  for (const char* name : {"1f1b", "zb1p", "gpipe", "zbv", "v-half", "v-min"}) {
    for (int r : {1, 2, 3, 4, 7, 8}) {
      for (int m : std::set<int>{1, 2, r, r + 1, 2 * r + 3}) sizes.push_back({name, r, m});
    }
  }
  // Interleaved 1F1B: any count below 2 * ranks, multiples of the ranks, and round counts that
  // divide the micro-batches (10 on 4 ranks: 2 rounds of 5).
  for (int r : {1, 2, 3, 4, 7, 8}) {
    for (int m : std::set<int>{1, 2, r, r + 1, 2 * r, 3 * r}) {
      sizes.push_back({"interleaved-1f1b", r, m});
    }
  }
  sizes.push_back({"interleaved-1f1b", 4, 10});
  return sizes;
}

class AcceptedSizeTest : public testing::TestWithParam<Size> {};

using Key = std::tuple<int, int, int>;  // direction, stage, microbatch

// Each stage instance runs each micro-batch forward once, backward once (B, Bz or the backward
// half of FB), and a W per Bz after it; every op sits on the rank that holds its stage.
TEST_P(AcceptedSizeTest, EveryMicrobatchRunsOnceForwardAndBackward) {
  const Size& size = GetParam();
  Schedule schedule = build_schedule(size.name, size.num_ranks, size.num_microbatches);
  ASSERT_EQ(schedule.name, size.name);
  ASSERT_EQ(schedule.num_ranks(), size.num_ranks);
  ASSERT_EQ(static_cast<int>(schedule.programs.size()), size.num_ranks);
  const int per_direction = schedule.microbatches_per_direction();
  EXPECT_EQ(per_direction * schedule.num_directions(), size.num_microbatches);

  std::map<Key, int> forwards, backwards, deferred, weights;
  for (int rank = 0; rank < schedule.num_ranks(); ++rank) {
    for (const Op& op : schedule.programs[rank]) {
      if (op.is_communication()) continue;
      ASSERT_EQ(schedule.placement.rank_of(op.direction, op.stage), rank) << describe(op);
      Key key{op.direction, op.stage, op.microbatch};
      switch (op.kind) {
        case OpKind::kForward: ++forwards[key]; break;
        case OpKind::kBackward:
          ++backwards[key];
          if (op.defer_weight_grad) ++deferred[key];
          break;
        case OpKind::kWeight:
          ASSERT_EQ(deferred[key], 1) << "W before its Bz: " << describe(op);
          ++weights[key];
          break;
        case OpKind::kForwardBackward: {
          ++forwards[key];
          ASSERT_EQ(schedule.placement.rank_of(op.backward_direction, op.backward_stage), rank);
          Key b{op.backward_direction, op.backward_stage, op.backward_microbatch};
          ASSERT_EQ(forwards[b], 1) << "backward before forward: " << describe(op);
          ++backwards[b];
          break;
        }
        default: break;
      }
      if (op.kind == OpKind::kBackward) {
        ASSERT_EQ(forwards[key], 1) << "backward before forward: " << describe(op);
      }
    }
  }
  const std::size_t instances =
      static_cast<std::size_t>(schedule.num_directions()) * schedule.num_stages() * per_direction;
  EXPECT_EQ(forwards.size(), instances);
  EXPECT_EQ(backwards.size(), instances);
  for (const auto& [key, n] : forwards) EXPECT_EQ(n, 1);
  for (const auto& [key, n] : backwards) EXPECT_EQ(n, 1);
  EXPECT_EQ(weights, deferred);
  for (const auto& [d, s, m] : [&] {
         std::vector<Key> keys;
         for (const auto& kv : forwards) keys.push_back(kv.first);
         return keys;
       }()) {
    ASSERT_TRUE(d >= 0 && d < schedule.num_directions() && m >= 0 && m < per_direction);
  }
}

// Sends on one rank pair appear in the same order as the receives on the other end, and each
// receive precedes its consumer.
TEST_P(AcceptedSizeTest, ChannelsAreFifoMatched) {
  const Size& size = GetParam();
  Schedule schedule = build_schedule(size.name, size.num_ranks, size.num_microbatches);
  std::map<std::pair<int, int>, std::vector<Key>> sent, received;
  for (int rank = 0; rank < schedule.num_ranks(); ++rank) {
    for (const Op& op : schedule.programs[rank]) {
      if (op.is_send()) {
        int grad = op.kind == OpKind::kSendGrad;
        sent[{rank, op.peer}].push_back({grad, op.stage + 100 * op.direction, op.microbatch});
      } else if (op.is_recv()) {
        int grad = op.kind == OpKind::kRecvGrad;
        received[{op.peer, rank}].push_back({grad, op.stage + 100 * op.direction, op.microbatch});
      }
    }
  }
  EXPECT_EQ(sent, received);
}

// The full rule set (FIFO channels, receives before consumers, no deadlock) from the validator.
TEST_P(AcceptedSizeTest, Validates) {
  const Size& size = GetParam();
  Schedule schedule = build_schedule(size.name, size.num_ranks, size.num_microbatches);
  std::vector<ValidationError> problems = find_problems(schedule, 5);
  for (const ValidationError& problem : problems) ADD_FAILURE() << to_string(problem);
}

INSTANTIATE_TEST_SUITE_P(Builders, AcceptedSizeTest, testing::ValuesIn(accepted_sizes()),
                         size_name);

class RejectedSizeTest : public testing::TestWithParam<Size> {};

TEST_P(RejectedSizeTest, ThrowsWithTheValues) {
  const Size& size = GetParam();
  try {
    build_schedule(size.name, size.num_ranks, size.num_microbatches);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("num_ranks=" + std::to_string(size.num_ranks)), std::string::npos) << what;
    EXPECT_NE(what.find("num_microbatches=" + std::to_string(size.num_microbatches)),
              std::string::npos)
        << what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Builders, RejectedSizeTest,
    testing::Values(Size{"dualpipe", 6, 8}, Size{"dualpipe", 3, 12}, Size{"dualpipe", 4, 9},
                    Size{"dualpipe", 0, 4}, Size{"dualpipev", 4, 7}, Size{"dualpipev", 0, 2},
                    Size{"1f1b", 0, 4}, Size{"1f1b", 4, 0}, Size{"zb1p", 2, -1},
                    Size{"gpipe", -1, 3}, Size{"interleaved-1f1b", 4, 9},
                    Size{"interleaved-1f1b", 3, 7}, Size{"interleaved-1f1b", 0, 4},
                    Size{"zbv", 0, 4}, Size{"v-half", 3, 0}, Size{"v-min", -2, 4},
                    Size{"search", 0, 4}, Size{"search-v", 2, 0}, Size{"search-dual", 3, 6}),
    size_name);

TEST(RegistryTest, NamesAndUnknownName) {
  EXPECT_EQ(schedule_names(),
            (std::vector<std::string>{"dualpipe", "dualpipev", "1f1b", "zb1p", "gpipe",
                                      "interleaved-1f1b", "zbv", "v-half", "v-min", "search",
                                      "search-v", "search-dual"}));
  try {
    build_schedule("pipedream", 2, 4);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("pipedream"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("zb1p"), std::string::npos);
  }
}

// A hand-checked case: rank 1 consumes the activations it receives from rank 0 out of send
// order (m=1 before m=0); FIFO forces both receives before the first consumer.
TEST(CommunicationTest, ReceivesFollowSenderOrder) {
  Schedule schedule{"hand", 2, Placement::round_robin(2, 2), {}};
  schedule.programs = {
      {Op::forward(0, 0, 0), Op::forward(0, 0, 1), Op::backward(0, 0, 1), Op::backward(0, 0, 0)},
      {Op::forward(0, 1, 1), Op::backward(0, 1, 1), Op::forward(0, 1, 0), Op::backward(0, 1, 0)},
  };
  insert_communication(schedule);
  Program rank0 = {Op::forward(0, 0, 0),      Op::send_activation(0, 0, 0, 1),
                   Op::forward(0, 0, 1),      Op::send_activation(0, 0, 1, 1),
                   Op::recv_grad(0, 1, 1, 1), Op::backward(0, 0, 1),
                   Op::recv_grad(0, 1, 0, 1), Op::backward(0, 0, 0)};
  Program rank1 = {
      Op::recv_activation(0, 0, 0, 0), Op::recv_activation(0, 0, 1, 0), Op::forward(0, 1, 1),
      Op::backward(0, 1, 1),           Op::send_grad(0, 1, 1, 0),       Op::forward(0, 1, 0),
      Op::backward(0, 1, 0),           Op::send_grad(0, 1, 0, 0)};
  EXPECT_EQ(schedule.programs[0], rank0);
  EXPECT_EQ(schedule.programs[1], rank1);
}

TEST(CommunicationTest, NoCommunicationWithinOneRank) {
  Schedule schedule = build_schedule("dualpipev", 1, 4);
  for (const Op& op : schedule.programs[0]) EXPECT_FALSE(op.is_communication()) << describe(op);
}

TEST(CommunicationTest, RejectsCommunicationInInput) {
  Schedule schedule = build_schedule("1f1b", 2, 2);
  EXPECT_THROW(insert_communication(schedule), std::invalid_argument);
}

// A large DualPipe builds (the pass is linear; how fast is bench/'s business, not a test's).
TEST(BuilderScaleTest, LargeDualPipeBuilds) {
  Schedule schedule = build_schedule("dualpipe", 64, 4096);
  ASSERT_EQ(schedule.programs.size(), 64u);
  // Rank 0 holds (0, 0) and (1, 63), 2048 micro-batches each: 4096 forwards and 4096 backwards,
  // where an FB op is one of each, and one W per deferred (zero-bubble) backward.
  std::size_t forwards = 0, backwards = 0, deferred = 0, weights = 0, compute = 0;
  for (const Op& op : schedule.programs[0]) {
    if (!op.is_compute()) continue;
    ++compute;
    const bool f = op.kind == OpKind::kForward || op.kind == OpKind::kForwardBackward;
    const bool b = op.kind == OpKind::kBackward || op.kind == OpKind::kForwardBackward;
    forwards += f;
    backwards += b;
    deferred += b && op.defer_weight_grad;
    weights += op.kind == OpKind::kWeight;
  }
  EXPECT_EQ(forwards, 4096u);
  EXPECT_EQ(backwards, 4096u);
  EXPECT_EQ(weights, deferred);
  // DualPipe's eight phases on rank 0 (half_rank 0 of 32, 2048 chunks per direction):
  // 62 F, 2 F, 31 x (B W F), 1985 x (FB FB), 31 x (B FB), 2 B, 31 x (W B), 1 W.
  EXPECT_EQ(weights, 31u + 31u + 1u);
  EXPECT_EQ(compute, 62u + 2u + 31u * 3 + 1985u * 2 + 31u * 2 + 2u + 31u * 2 + 1u);  // 4254
}

}  // namespace
}  // namespace dualpipe::schedule

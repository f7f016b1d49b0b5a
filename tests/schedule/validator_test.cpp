#include "dualpipe/schedule/validator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "dualpipe/schedule/registry.h"

namespace dualpipe::schedule {
namespace {

// A plain 1F1B schedule with communication, written here rather than taken from the builders
// so the validator is tested against an independent source. With `deferred`, every backward is
// a Bz and the W's follow at the end in FIFO order (a crude zero-bubble shape).
Schedule one_f_one_b(int num_ranks, int num_microbatches, bool deferred = false) {
  Schedule schedule;
  schedule.name = deferred ? "test-1f1b-deferred" : "test-1f1b";
  schedule.num_microbatches = num_microbatches;
  schedule.placement = Placement::round_robin(num_ranks, num_ranks);
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    Program& p = schedule.programs[rank];
    const int s = rank;
    auto forward = [&](int m) {
      if (s > 0) p.push_back(Op::recv_activation(0, s - 1, m, rank - 1));
      p.push_back(Op::forward(0, s, m));
      if (s + 1 < num_ranks) p.push_back(Op::send_activation(0, s, m, rank + 1));
    };
    auto backward = [&](int m) {
      if (s + 1 < num_ranks) p.push_back(Op::recv_grad(0, s + 1, m, rank + 1));
      p.push_back(Op::backward(0, s, m, deferred));
      if (s > 0) p.push_back(Op::send_grad(0, s, m, rank - 1));
    };
    const int warmup = std::min(num_ranks - rank - 1, num_microbatches);
    int f = 0, b = 0;
    while (f < warmup) forward(f++);
    while (f < num_microbatches) {
      forward(f++);
      backward(b++);
    }
    while (b < num_microbatches) backward(b++);
    if (deferred) {
      for (int m = 0; m < num_microbatches; ++m) p.push_back(Op::weight(0, s, m));
    }
  }
  return schedule;
}

std::string first_message(const Schedule& schedule) {
  try {
    validate(schedule);
  } catch (const ScheduleError& e) {
    return e.what();
  }
  return "";
}

// Expects `schedule` to be rejected with a first problem on `rank` whose text contains each of
// `fragments`.
void expect_rejected(const Schedule& schedule, int rank,
                     const std::vector<std::string>& fragments) {
  const std::string message = first_message(schedule);
  ASSERT_FALSE(message.empty()) << "schedule was accepted";
  if (rank >= 0) {
    EXPECT_NE(message.find("rank " + std::to_string(rank) + ","), std::string::npos) << message;
  }
  for (const std::string& fragment : fragments) {
    EXPECT_NE(message.find(fragment), std::string::npos)
        << "missing '" << fragment << "' in: " << message;
  }
}

TEST(ValidatorTest, AcceptsHandWrittenTwoRank1F1B) {
  Schedule schedule;
  schedule.name = "hand";
  schedule.num_microbatches = 2;
  schedule.placement = Placement::round_robin(2, 2);
  schedule.programs = {
      {Op::forward(0, 0, 0), Op::send_activation(0, 0, 0, 1), Op::forward(0, 0, 1),
       Op::send_activation(0, 0, 1, 1), Op::recv_grad(0, 1, 0, 1), Op::backward(0, 0, 0),
       Op::recv_grad(0, 1, 1, 1), Op::backward(0, 0, 1)},
      {Op::recv_activation(0, 0, 0, 0), Op::forward(0, 1, 0), Op::backward(0, 1, 0),
       Op::send_grad(0, 1, 0, 0), Op::recv_activation(0, 0, 1, 0), Op::forward(0, 1, 1),
       Op::backward(0, 1, 1), Op::send_grad(0, 1, 1, 0)},
  };
  EXPECT_TRUE(find_problems(schedule).empty()) << to_string(find_problems(schedule).front());
  EXPECT_NO_THROW(validate(schedule));
}

TEST(ValidatorTest, AcceptsForwardBackwardOpWithDeferredHalf) {
  Schedule schedule;
  schedule.name = "fb";
  schedule.num_microbatches = 2;
  schedule.placement = Placement::round_robin(1, 1);
  Op fb = Op::forward_backward(0, 0, 1, 0, 0, 0);
  fb.defer_weight_grad = true;
  schedule.programs = {{Op::forward(0, 0, 0), fb, Op::backward(0, 0, 1), Op::weight(0, 0, 0)}};
  EXPECT_NO_THROW(validate(schedule));
  // The backward half cannot be the forward half's own micro-batch.
  schedule.programs = {
      {Op::forward_backward(0, 0, 0, 0, 0, 0), Op::forward(0, 0, 1), Op::backward(0, 0, 1)}};
  expect_rejected(schedule, 0, {"op 0", "before its forward at op 0"});
}

class Generated1F1BTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(Generated1F1BTest, Validates) {
  const auto [num_ranks, num_microbatches, deferred] = GetParam();
  const Schedule schedule = one_f_one_b(num_ranks, num_microbatches, deferred);
  const std::vector<ValidationError> problems = find_problems(schedule);
  EXPECT_TRUE(problems.empty()) << to_string(problems.front());
}

INSTANTIATE_TEST_SUITE_P(Sizes, Generated1F1BTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7),
                                            ::testing::Values(1, 4, 9), ::testing::Bool()));

// ---- Structural problems. ----

TEST(ValidatorTest, RejectsStageOnAnotherRank) {
  Schedule schedule = one_f_one_b(2, 2);
  schedule.programs[0][0] = Op::forward(0, 1, 0);
  expect_rejected(schedule, 0, {"op 0", "F(d=0,s=1,m=0)", "lives on rank 1, not on this rank"});
}

TEST(ValidatorTest, RejectsNonexistentStageAndDirection) {
  Schedule schedule = one_f_one_b(2, 2);
  schedule.programs[1][1] = Op::forward(1, 1, 0);
  expect_rejected(schedule, 1, {"op 1", "does not exist"});
  schedule = one_f_one_b(2, 2);
  schedule.programs[1][1] = Op::forward(0, 5, 0);
  expect_rejected(schedule, 1, {"stages 0..1"});
}

TEST(ValidatorTest, RejectsMicrobatchOutOfRange) {
  Schedule schedule = one_f_one_b(2, 2);
  schedule.programs[0][0] = Op::forward(0, 0, 2);
  expect_rejected(schedule, 0, {"micro-batch 2 is out of range 0..1"});
  schedule.programs[0][0] = Op::forward(0, 0, -1);
  expect_rejected(schedule, 0, {"micro-batch -1 is out of range"});
}

TEST(ValidatorTest, RejectsBadPeers) {
  Schedule schedule = one_f_one_b(3, 3);
  schedule.programs[0][1] = Op::send_activation(0, 0, 0, 3);
  expect_rejected(schedule, 0, {"op 1", "peer 3 is out of range 0..2"});
  schedule.programs[0][1] = Op::send_activation(0, 0, 0, 0);
  expect_rejected(schedule, 0, {"is this rank itself"});
  schedule.programs[0][1] = Op::send_activation(0, 0, 0, 2);
  expect_rejected(schedule, 0, {"peer is rank 2", "lives on rank 1"});
  schedule = one_f_one_b(3, 3);
  // Last stage has nowhere to send its activation; stage 0 nowhere to send its gradient.
  schedule.programs[2].push_back(Op::send_activation(0, 2, 0, 1));
  expect_rejected(schedule, 2, {"last stage"});
  schedule = one_f_one_b(3, 3);
  schedule.programs[0].push_back(Op::send_grad(0, 0, 0, 1));
  expect_rejected(schedule, 0, {"stage 0 has no previous stage"});
}

TEST(ValidatorTest, RejectsWrongNumberOfPrograms) {
  Schedule schedule = one_f_one_b(2, 2);
  schedule.programs.pop_back();
  EXPECT_THROW(validate(schedule), ScheduleError);
  EXPECT_NE(first_message(schedule).find("1 programs but its placement has 2 ranks"),
            std::string::npos);
}

// ---- Completeness. ----

TEST(ValidatorTest, RejectsMissingAndDuplicateCompute) {
  Schedule schedule;
  schedule.name = "one-rank";
  schedule.num_microbatches = 2;
  schedule.placement = Placement::round_robin(1, 1);
  schedule.programs = {{Op::forward(0, 0, 0), Op::backward(0, 0, 0), Op::forward(0, 0, 1)}};
  expect_rejected(schedule, 0, {"missing backward", "micro-batch 1"});
  schedule.programs = {{Op::forward(0, 0, 0), Op::backward(0, 0, 0), Op::forward(0, 0, 1),
                        Op::backward(0, 0, 1), Op::backward(0, 0, 1)}};
  expect_rejected(schedule, 0, {"op 4", "duplicate backward of (d=0,s=0,m=1): already at op 3"});
  schedule.programs = {{Op::forward(0, 0, 0), Op::backward(0, 0, 0, true), Op::forward(0, 0, 1),
                        Op::backward(0, 0, 1, true), Op::weight(0, 0, 0)}};
  expect_rejected(schedule, 0, {"W(d=0,s=0,m=1)", "missing W for the deferred backward at op 3"});
  schedule.programs = {{Op::forward(0, 0, 0), Op::backward(0, 0, 0), Op::forward(0, 0, 1),
                        Op::backward(0, 0, 1), Op::weight(0, 0, 0)}};
  expect_rejected(schedule, 0, {"op 4", "W for a full backward"});
}

// ---- Order on a rank. ----

TEST(ValidatorTest, RejectsBackwardBeforeForwardAndWeightOrder) {
  Schedule schedule;
  schedule.name = "one-rank";
  schedule.num_microbatches = 2;
  schedule.placement = Placement::round_robin(1, 1);
  schedule.programs = {
      {Op::backward(0, 0, 0), Op::forward(0, 0, 0), Op::forward(0, 0, 1), Op::backward(0, 0, 1)}};
  expect_rejected(schedule, 0, {"op 0", "before its forward at op 1"});
  schedule.programs = {{Op::forward(0, 0, 0), Op::weight(0, 0, 0), Op::backward(0, 0, 0, true),
                        Op::forward(0, 0, 1), Op::backward(0, 0, 1)}};
  expect_rejected(schedule, 0, {"op 1", "W before its deferred backward at op 2"});
  schedule.programs = {{Op::forward(0, 0, 0), Op::forward(0, 0, 1), Op::backward(0, 0, 0, true),
                        Op::backward(0, 0, 1, true), Op::weight(0, 0, 1), Op::weight(0, 0, 0)}};
  expect_rejected(schedule, 0, {"op 4", "W out of FIFO order", "at op 2"});
  EXPECT_EQ(find_problems(schedule).size(), 1u);  // the swap is one problem, not two
}

TEST(ValidatorTest, RejectsComputeBeforeItsReceive) {
  Schedule schedule = one_f_one_b(2, 2);
  // Rank 1 starts with recvA(m=0), F(m=0): swap them.
  std::swap(schedule.programs[1][0], schedule.programs[1][1]);
  expect_rejected(
      schedule, 1,
      {"op 0", "forward needs the activation of (d=0,s=0,m=0)", "received only later at op 1"});
}

TEST(ValidatorTest, RejectsMissingReceiveForCrossRankInput) {
  Schedule schedule = one_f_one_b(2, 2);
  schedule.programs[1].erase(schedule.programs[1].begin());
  expect_rejected(schedule, 1, {"this rank never receives it"});
  // The orphaned send is reported too.
  bool orphan = false;
  for (const ValidationError& e : find_problems(schedule)) {
    orphan |= e.rank == 0 && e.reason.find("send without a receive") != std::string::npos;
  }
  EXPECT_TRUE(orphan);
}

TEST(ValidatorTest, RejectsSendBeforeProducingCompute) {
  Schedule schedule = one_f_one_b(2, 2);
  // Rank 0 starts with F(m=0), sendA(m=0).
  std::swap(schedule.programs[0][0], schedule.programs[0][1]);
  expect_rejected(schedule, 0, {"op 0", "before the forward at op 1 produces it"});
}

TEST(ValidatorTest, RejectsUnmatchedReceive) {
  Schedule schedule = one_f_one_b(2, 2);
  Program& rank0 = schedule.programs[0];
  rank0.erase(std::find(rank0.begin(), rank0.end(), Op::send_activation(0, 0, 1, 1)));
  expect_rejected(schedule, 1, {"receive without a send: rank 0 never sends it"});
}

TEST(ValidatorTest, RejectsChannelOrderMismatch) {
  // Rank 0 sends activations 0 then 1; rank 1 receives 1 then 0 (both before any compute).
  Schedule schedule;
  schedule.name = "fifo";
  schedule.num_microbatches = 2;
  schedule.placement = Placement::round_robin(2, 2);
  schedule.programs = {
      {Op::forward(0, 0, 0), Op::send_activation(0, 0, 0, 1), Op::forward(0, 0, 1),
       Op::send_activation(0, 0, 1, 1), Op::recv_grad(0, 1, 0, 1), Op::backward(0, 0, 0),
       Op::recv_grad(0, 1, 1, 1), Op::backward(0, 0, 1)},
      {Op::recv_activation(0, 0, 1, 0), Op::recv_activation(0, 0, 0, 0), Op::forward(0, 1, 0),
       Op::backward(0, 1, 0), Op::send_grad(0, 1, 0, 0), Op::forward(0, 1, 1),
       Op::backward(0, 1, 1), Op::send_grad(0, 1, 1, 0)},
  };
  expect_rejected(schedule, 1, {"op 0", "channel 0->1", "receive #0", "send #0 there is op 1"});
}

TEST(ValidatorTest, RejectsDeadlockNamingEachStuckRank) {
  Schedule schedule;
  schedule.name = "deadlock";
  schedule.num_microbatches = 1;
  schedule.placement = Placement::round_robin(2, 2);
  // Rank 0 waits for the gradient before sending the activation rank 1 needs to produce it.
  schedule.programs = {
      {Op::forward(0, 0, 0), Op::recv_grad(0, 1, 0, 1), Op::send_activation(0, 0, 0, 1),
       Op::backward(0, 0, 0)},
      {Op::recv_activation(0, 0, 0, 0), Op::forward(0, 1, 0), Op::backward(0, 1, 0),
       Op::send_grad(0, 1, 0, 0)},
  };
  const std::vector<ValidationError> problems = find_problems(schedule);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].rank, 0);
  EXPECT_EQ(problems[0].op_index, 1);
  EXPECT_NE(problems[0].reason.find("deadlock"), std::string::npos);
  EXPECT_NE(problems[0].reason.find("rank 1 is itself blocked at op 0"), std::string::npos)
      << problems[0].reason;
  EXPECT_EQ(problems[1].rank, 1);
  EXPECT_EQ(problems[1].op_index, 0);
  expect_rejected(schedule, 0, {"deadlock", "(and 1 more problem)"});
}

TEST(ValidatorTest, CapsRecordedProblemsButCountsAll) {
  Schedule schedule = one_f_one_b(4, 16);
  for (Program& p : schedule.programs) std::reverse(p.begin(), p.end());
  const std::vector<ValidationError> all = find_problems(schedule, 100000);
  ASSERT_GT(all.size(), 10u);
  EXPECT_EQ(find_problems(schedule, 10).size(), 10u);
  try {
    validate(schedule);
    FAIL() << "accepted a reversed schedule";
  } catch (const ScheduleError& e) {
    EXPECT_EQ(e.total_problems(), all.size());
    EXPECT_NE(std::string(e.what()).find("and " + std::to_string(all.size() - 1) + " more"),
              std::string::npos)
        << e.what();
  }
}

// ---- Mutations of valid schedules: each one that breaks a rule must be rejected. ----

// Mutates `schedule` in every way that must make it invalid and checks each is rejected with a
// message naming a rank. Uses every position when the schedule is small, else a fixed-seed
// sample.
struct MutationCounts {
  int positional = 0;  // drops, duplicates, micro-batch and peer changes
  int swaps = 0;       // receive/compute, compute/send and F/B swaps
  int weights_moved = 0;
  int send_swaps = 0;
  int fifo_swaps = 0;  // swaps that break only the channel order
};

void check_mutations_rejected(const Schedule& valid, MutationCounts* counts,
                              std::size_t max_per_kind = 200) {
  ASSERT_TRUE(find_problems(valid).empty()) << to_string(find_problems(valid).front());
  std::vector<std::pair<int, int>> positions;
  for (int r = 0; r < static_cast<int>(valid.programs.size()); ++r) {
    for (int i = 0; i < static_cast<int>(valid.programs[r].size()); ++i)
      positions.push_back({r, i});
  }
  std::mt19937 random(12345);
  if (positions.size() > max_per_kind) {
    std::shuffle(positions.begin(), positions.end(), random);
    positions.resize(max_per_kind);
  }
  auto expect_invalid = [&](const Schedule& mutated, const std::string& what, int* count) {
    ++*count;
    const std::vector<ValidationError> problems = find_problems(mutated, 1);
    ASSERT_FALSE(problems.empty()) << valid.name << ": accepted after " << what;
    const std::string message = first_message(mutated);
    EXPECT_NE(message.find("rank "), std::string::npos) << message;
  };
  const int num_ranks = valid.num_ranks();
  for (const auto& [r, i] : positions) {
    const Op& op = valid.programs[r][i];
    const std::string where =
        "rank " + std::to_string(r) + " op " + std::to_string(i) + " " + describe(op);
    {
      Schedule m = valid;
      m.programs[r].erase(m.programs[r].begin() + i);
      expect_invalid(m, "dropping " + where, &counts->positional);
    }
    {
      Schedule m = valid;
      m.programs[r].insert(m.programs[r].begin() + i, op);
      expect_invalid(m, "duplicating " + where, &counts->positional);
    }
    {
      // Another micro-batch: the original is now missing and the new one duplicated (or out of
      // range).
      Schedule m = valid;
      m.programs[r][i].microbatch = op.microbatch + 1;
      expect_invalid(m, "changing the micro-batch of " + where, &counts->positional);
    }
    if (op.is_communication()) {
      Schedule m = valid;
      m.programs[r][i].peer = (op.peer + 1) % (num_ranks + 1);
      expect_invalid(m, "changing the peer of " + where, &counts->positional);
    }
  }
  // Swaps that must break a rule: a receive with the compute op right after it that consumes
  // its item; a compute op with the send right after it of the item it produces; a Bz with
  // its W moved before it.
  for (int r = 0; r < num_ranks; ++r) {
    const Program& p = valid.programs[r];
    for (int i = 0; i + 1 < static_cast<int>(p.size()); ++i) {
      const Op& a = p[i];
      const Op& b = p[i + 1];
      bool must_fail = false;
      auto consumes = [&](const Op& recv, const Op& compute) {
        const bool activation = recv.kind == OpKind::kRecvActivation;
        const int needed_stage = recv.stage + (activation ? 1 : -1);
        auto half = [&](OpKind kind, int d, int s, int mb) {
          return kind == (activation ? OpKind::kForward : OpKind::kBackward) &&
                 d == recv.direction && s == needed_stage && mb == recv.microbatch;
        };
        return half(compute.kind == OpKind::kForwardBackward ? OpKind::kForward : compute.kind,
                    compute.direction, compute.stage, compute.microbatch) ||
               (compute.kind == OpKind::kForwardBackward &&
                half(OpKind::kBackward, compute.backward_direction, compute.backward_stage,
                     compute.backward_microbatch));
      };
      auto produces = [&](const Op& compute, const Op& send) {
        const bool activation = send.kind == OpKind::kSendActivation;
        auto half = [&](OpKind kind, int d, int s, int mb) {
          return kind == (activation ? OpKind::kForward : OpKind::kBackward) &&
                 d == send.direction && s == send.stage && mb == send.microbatch;
        };
        return half(compute.kind == OpKind::kForwardBackward ? OpKind::kForward : compute.kind,
                    compute.direction, compute.stage, compute.microbatch) ||
               (compute.kind == OpKind::kForwardBackward &&
                half(OpKind::kBackward, compute.backward_direction, compute.backward_stage,
                     compute.backward_microbatch));
      };
      if (a.is_recv() && b.is_compute()) must_fail = consumes(a, b);
      if (a.is_compute() && b.is_send()) must_fail = produces(a, b);
      if (a.kind == OpKind::kForward && b.kind == OpKind::kBackward && a.direction == b.direction &&
          a.stage == b.stage && a.microbatch == b.microbatch) {
        must_fail = true;
      }
      if (!must_fail) continue;
      Schedule m = valid;
      std::swap(m.programs[r][i], m.programs[r][i + 1]);
      expect_invalid(m,
                     "swapping rank " + std::to_string(r) + " ops " + std::to_string(i) + " and " +
                         std::to_string(i + 1) + " " + describe(a) + " " + describe(b),
                     &counts->swaps);
    }
    // Move each W to just before its deferred backward.
    for (int i = 0; i < static_cast<int>(p.size()); ++i) {
      if (p[i].kind != OpKind::kWeight) continue;
      for (int j = 0; j < i; ++j) {
        const Op& c = p[j];
        const bool is_its_bz =
            (c.kind == OpKind::kBackward && c.direction == p[i].direction &&
             c.stage == p[i].stage && c.microbatch == p[i].microbatch) ||
            (c.kind == OpKind::kForwardBackward && c.backward_direction == p[i].direction &&
             c.backward_stage == p[i].stage && c.backward_microbatch == p[i].microbatch);
        if (!is_its_bz) continue;
        Schedule m = valid;
        Op w = m.programs[r][i];
        m.programs[r].erase(m.programs[r].begin() + i);
        m.programs[r].insert(m.programs[r].begin() + j, w);
        expect_invalid(m, "moving " + describe(w) + " before its Bz on rank " + std::to_string(r),
                       &counts->weights_moved);
        break;
      }
    }
  }
  // Swap two consecutive sends of one channel on the sending side only.
  for (int r = 0; r < num_ranks; ++r) {
    const Program& p = valid.programs[r];
    for (int i = 0; i < static_cast<int>(p.size()); ++i) {
      if (!p[i].is_send()) continue;
      int j = i + 1;
      while (j < static_cast<int>(p.size()) && !(p[j].is_send() && p[j].peer == p[i].peer)) ++j;
      if (j == static_cast<int>(p.size())) continue;
      Schedule m = valid;
      std::swap(m.programs[r][i], m.programs[r][j]);
      expect_invalid(m,
                     "swapping sends " + describe(p[i]) + " and " + describe(p[j]) + " on rank " +
                         std::to_string(r),
                     &counts->send_swaps);
      break;  // one per rank keeps the test fast
    }
  }
  // Swap two sends (or two receives) of one channel where every compute op still finds its
  // input and every send follows its compute: only FIFO channel matching is broken.
  for (int r = 0; r < num_ranks; ++r) {
    const Program& p = valid.programs[r];
    // Position of the forward (false) or backward (true) of (d, s, m) on this rank.
    std::map<std::tuple<bool, int, int, int>, int> compute_at;
    for (int i = 0; i < static_cast<int>(p.size()); ++i) {
      const Op& op = p[i];
      if (op.kind == OpKind::kForward || op.kind == OpKind::kForwardBackward) {
        compute_at[{false, op.direction, op.stage, op.microbatch}] = i;
      }
      if (op.kind == OpKind::kBackward)
        compute_at[{true, op.direction, op.stage, op.microbatch}] = i;
      if (op.kind == OpKind::kForwardBackward) {
        compute_at[{true, op.backward_direction, op.backward_stage, op.backward_microbatch}] = i;
      }
    }
    // Where the item of comm op `op` is produced (send) or consumed (receive) on this rank.
    auto compute_of = [&](const Op& op) {
      const bool activation =
          op.kind == OpKind::kSendActivation || op.kind == OpKind::kRecvActivation;
      const int stage = op.is_send() ? op.stage : op.stage + (activation ? 1 : -1);
      return compute_at.at({!activation, op.direction, stage, op.microbatch});
    };
    int fifo_swaps_here = 0;
    for (int i = 0; i < static_cast<int>(p.size()) && fifo_swaps_here < 3; ++i) {
      if (!p[i].is_communication()) continue;
      int j = i + 1;
      while (j < static_cast<int>(p.size()) &&
             !(p[j].is_communication() && p[j].is_send() == p[i].is_send() &&
               p[j].peer == p[i].peer)) {
        ++j;
      }
      if (j == static_cast<int>(p.size())) continue;
      const bool only_fifo = p[i].is_send() ? compute_of(p[j]) < i : compute_of(p[i]) > j;
      if (!only_fifo) continue;
      Schedule m = valid;
      std::swap(m.programs[r][i], m.programs[r][j]);
      const std::string what =
          "swapping " + describe(p[i]) + " and " + describe(p[j]) + " on rank " + std::to_string(r);
      expect_invalid(m, what, &counts->fifo_swaps);
      EXPECT_NE(first_message(m).find("channel"), std::string::npos)
          << what << ": " << first_message(m);
      ++fifo_swaps_here;
    }
  }
}

class Mutated1F1BTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(Mutated1F1BTest, EveryBreakingMutationIsRejected) {
  const auto [num_ranks, num_microbatches, deferred] = GetParam();
  MutationCounts counts;
  check_mutations_rejected(one_f_one_b(num_ranks, num_microbatches, deferred), &counts);
  EXPECT_GT(counts.positional, 0);
  EXPECT_GT(counts.swaps, 0);
  EXPECT_EQ(counts.weights_moved > 0, deferred);
  EXPECT_EQ(counts.send_swaps > 0, num_ranks > 1 && num_microbatches > 1);
}

INSTANTIATE_TEST_SUITE_P(Sizes, Mutated1F1BTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4), ::testing::Values(1, 5),
                                            ::testing::Bool()));

// ---- Every builder's output. ----

struct BuilderCase {
  std::string name;
  int num_ranks;
  int num_microbatches;
};

void PrintTo(const BuilderCase& c, std::ostream* out) {
  *out << c.name << " num_ranks=" << c.num_ranks << " num_microbatches=" << c.num_microbatches;
}

std::string case_name(const ::testing::TestParamInfo<BuilderCase>& info) {
  std::string name = info.param.name + "_r" + std::to_string(info.param.num_ranks) + "_m" +
                     std::to_string(info.param.num_microbatches);
  std::replace(name.begin(), name.end(), '-', '_');  // gtest names: no '-'
  return name;
}

std::vector<BuilderCase> builder_cases() {
  std::vector<BuilderCase> cases;
  auto add = [&](const std::string& name, int r, int m) {
    for (const BuilderCase& c : cases) {
      if (c.name == name && c.num_ranks == r && c.num_microbatches == m) return;
    }
    cases.push_back({name, r, m});
  };
  for (int r : {2, 4, 6, 8}) {
    for (int c : {2 * r, 2 * r + 2, 3 * r, 4 * r + 6}) add("dualpipe", r, c);
  }
  for (int r : {1, 2, 3, 4, 5, 8}) {
    for (int m : {2 * r, 2 * r + 1, 3 * r + 2, 5 * r}) add("dualpipev", r, m);
  }
  for (const char* name : {"1f1b", "zb1p", "gpipe", "zbv", "v-half", "v-min"}) {
    for (int r : {1, 2, 3, 4, 7}) {
      for (int m : {1, r, 2 * r + 1, 4 * r}) add(name, r, m);
    }
  }
  for (int r : {1, 2, 3, 4, 7}) {
    for (int m : {1, r, 2 * r, 4 * r}) add("interleaved-1f1b", r, m);
  }
  return cases;
}

class BuilderOutputTest : public ::testing::TestWithParam<BuilderCase> {};

TEST_P(BuilderOutputTest, Validates) {
  const BuilderCase& c = GetParam();
  const Schedule schedule = build_schedule(c.name, c.num_ranks, c.num_microbatches);
  const std::vector<ValidationError> problems = find_problems(schedule);
  EXPECT_TRUE(problems.empty()) << problems.size()
                                << " problems, first: " << to_string(problems.front());
}

INSTANTIATE_TEST_SUITE_P(Builders, BuilderOutputTest, ::testing::ValuesIn(builder_cases()),
                         case_name);

class MutatedBuilderTest : public ::testing::TestWithParam<BuilderCase> {};

TEST_P(MutatedBuilderTest, EveryBreakingMutationIsRejected) {
  const BuilderCase& c = GetParam();
  MutationCounts counts;
  check_mutations_rejected(build_schedule(c.name, c.num_ranks, c.num_microbatches), &counts, 150);
  EXPECT_GT(counts.positional, 0);
  // One rank has no communication to swap, and DualPipeV's single rank fuses F and B into FB.
  EXPECT_EQ(counts.swaps > 0, c.num_ranks > 1);
  EXPECT_EQ(counts.weights_moved > 0, c.name == "zb1p" || c.name == "dualpipe" ||
                                          c.name == "dualpipev" || c.name == "zbv" ||
                                          c.name == "v-half" || c.name == "v-min");
  EXPECT_EQ(counts.send_swaps > 0, c.num_ranks > 1);
  // DualPipe's receives run ahead of their consumers, so some swaps break only FIFO order.
  if (c.num_ranks > 1 && (c.name == "dualpipe" || c.name == "dualpipev")) {
    EXPECT_GT(counts.fifo_swaps, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Builders, MutatedBuilderTest,
    ::testing::Values(BuilderCase{"dualpipe", 2, 4}, BuilderCase{"dualpipe", 4, 16},
                      BuilderCase{"dualpipe", 6, 20}, BuilderCase{"dualpipev", 1, 3},
                      BuilderCase{"dualpipev", 3, 8}, BuilderCase{"dualpipev", 4, 11},
                      BuilderCase{"1f1b", 4, 6}, BuilderCase{"zb1p", 3, 7},
                      BuilderCase{"gpipe", 3, 5}, BuilderCase{"interleaved-1f1b", 4, 8},
                      BuilderCase{"interleaved-1f1b", 3, 5}, BuilderCase{"zbv", 3, 7},
                      BuilderCase{"v-half", 4, 9}, BuilderCase{"v-min", 3, 7}),
    case_name);

// The validator runs on full-size schedules (linear time); this keeps a large one in the suite.
TEST(ValidatorTest, AcceptsLargeDualPipe) {
  const Schedule schedule = build_schedule("dualpipe", 32, 1024);
  const std::vector<ValidationError> problems = find_problems(schedule);
  EXPECT_TRUE(problems.empty()) << to_string(problems.front());
}

}  // namespace
}  // namespace dualpipe::schedule

// ShardedAdamW (ZeRO-1) on N ranks as threads over Gloo against N replicas that allreduce the
// gradients and each run AdamW over everything: the same parameters bit for bit (the sums are
// the same allreduce, the update is element-wise), 1/N of the state, and a saved shard that
// resumes exactly.
#include "dualpipe/train/zero_optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../runtime/test_ranks.h"
#include "dualpipe/runtime/gradient_buffers.h"

namespace dualpipe::train {
namespace {

using runtime::testing::message_of;
using runtime::testing::run_ranks;

// Odd sizes, so that shards cut through parameters, and a float64 one: two flat buffers.
std::vector<at::Tensor> make_params() {
  std::vector<at::Tensor> params = {at::linspace(-1.0, 1.0, 7, at::kFloat),
                                    at::linspace(0.5, 2.0, 15, at::kFloat).view({3, 5}),
                                    at::full({1}, 0.25f), at::linspace(-3.0, 3.0, 11, at::kDouble),
                                    at::linspace(1.0, 2.0, 13, at::kFloat)};
  for (at::Tensor& p : params) p.requires_grad_();
  return params;
}

std::vector<std::string> names_of(const std::vector<at::Tensor>& params) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < params.size(); ++i) names.push_back("p" + std::to_string(i));
  return names;
}

// Rank `rank`'s gradients at `step`: different on every rank and step; parameter 2 gets none on
// odd ranks (it then counts as zeros in the sum).
void set_gradients(std::vector<at::Tensor>& params, int rank, int step) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (i == 2 && rank % 2 == 1) continue;
    params[i].mutable_grad() = at::sin(params[i].detach() * (rank + 1) + step) * (1.0 + i);
  }
}

void allreduce_gradients(std::vector<at::Tensor>& params, const runtime::CommunicatorPtr& comm) {
  runtime::reduce_gradients(params, [&](std::vector<at::Tensor>& buckets) {
    for (at::Tensor& b : buckets) {
      std::vector<at::Tensor> one = {b};
      comm->allreduce(one)->wait();
    }
  });
}

class ShardedAdamWTest : public ::testing::TestWithParam<int> {};

TEST_P(ShardedAdamWTest, MatchesReplicatedAdamWBitForBitWithAShardOfTheState) {
  const int size = GetParam();
  const std::chrono::milliseconds timeout(20000);
  AdamWOptions options;
  options.weight_decay = 0.1;
  std::vector<NamedTensors> saved_by_rank(static_cast<std::size_t>(size));
  const auto errors = run_ranks(size, [&](int rank, runtime::CommunicatorPtr comm) {
    std::vector<at::Tensor> replicated = make_params(), sharded = make_params();
    AdamW adam(names_of(replicated), replicated, options);
    ShardedAdamW zero(names_of(sharded), sharded, options, comm, timeout);
    for (int step = 1; step <= 5; ++step) {
      set_gradients(replicated, rank, step);
      set_gradients(sharded, rank, step);
      allreduce_gradients(replicated, comm);
      adam.step(0.01 * step);
      zero.step(0.01 * step);
      adam.zero_grad();
      zero.zero_grad();
    }
    for (std::size_t i = 0; i < replicated.size(); ++i) {
      EXPECT_TRUE(at::equal(replicated[i], sharded[i])) << "rank " << rank << " parameter " << i;
    }
    // The whole moments, reassembled from the shards, are AdamW's.
    const std::vector<std::vector<at::Tensor>> moments = zero.gather_moments();
    for (std::size_t i = 0; i < replicated.size(); ++i) {
      const std::vector<at::Tensor> want = adam.state_of(replicated[i]);
      EXPECT_TRUE(at::equal(moments[i][0], want[0])) << "exp_avg of parameter " << i;
      EXPECT_TRUE(at::equal(moments[i][1], want[1])) << "exp_avg_sq of parameter " << i;
    }
    // 1/size of the state, within one padded element per buffer and moment.
    const double share = static_cast<double>(adam.state_bytes()) / size;
    EXPECT_LE(static_cast<double>(zero.state_bytes()), share + 2 * 2 * 8) << "rank " << rank;
    EXPECT_GE(static_cast<double>(zero.state_bytes()), share - 2 * 2 * 8 * size) << "rank " << rank;

    // A saved shard, loaded into a fresh optimiser, continues bit for bit.
    NamedTensors saved;
    zero.save_state(saved, "opt.");
    // Every rank's saved shard, put together, gives the whole moments (a resharding resume).
    saved_by_rank[static_cast<std::size_t>(rank)] = saved;
    comm->barrier()->wait();
    const std::vector<std::vector<at::Tensor>> assembled =
        ShardedAdamW::moments_from_shards(sharded, saved_by_rank, "opt.");
    for (std::size_t i = 0; i < replicated.size(); ++i) {
      const std::vector<at::Tensor> want = adam.state_of(replicated[i]);
      EXPECT_TRUE(at::equal(assembled[i][0], want[0])) << "assembled exp_avg " << i;
      EXPECT_TRUE(at::equal(assembled[i][1], want[1])) << "assembled exp_avg_sq " << i;
    }
    comm->barrier()->wait();
    std::vector<at::Tensor> copy;
    for (const at::Tensor& p : sharded) copy.push_back(p.detach().clone().requires_grad_());
    ShardedAdamW resumed(names_of(copy), copy, options, comm, timeout);
    resumed.load_state(saved, "opt.");
    zero.scatter_moments(moments);  // a no-op round trip of the shard
    set_gradients(sharded, rank, 6);
    set_gradients(copy, rank, 6);
    zero.step(0.02);
    resumed.step(0.02);
    for (std::size_t i = 0; i < copy.size(); ++i) {
      EXPECT_TRUE(at::equal(copy[i], sharded[i])) << "resumed, parameter " << i;
    }
    // A shard of another layout is refused, naming both.
    saved["opt.zero.layout"][0] = size + 1;
    try {
      resumed.load_state(saved, "opt.");
      ADD_FAILURE() << "a shard of DP=" << size + 1 << " was loaded into DP=" << size;
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("DP=" + std::to_string(size + 1)), std::string::npos) << message;
      EXPECT_NE(message.find("DP=" + std::to_string(size)), std::string::npos) << message;
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_FALSE(errors[r]) << message_of(errors[r]);
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, ShardedAdamWTest, ::testing::Values(1, 2, 3, 4));

}  // namespace
}  // namespace dualpipe::train

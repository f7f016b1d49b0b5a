// PP=2 x DP=2 equals one process on the whole batch; the merged Chrome trace has every rank.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "mlp_stage.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

using testing::make_mlp_stage;
using testing::mse;

// The pipeline communicator of `replica` and the data-parallel communicator of pipeline rank
// `rank` on a PP x DP grid of thread ranks. Blocking: every thread of the grid calls it.
std::pair<CommunicatorPtr, CommunicatorPtr> connect_grid(
    const c10::intrusive_ptr<c10d::Store>& store, int replica, int rank, int pp_size, int dp_size) {
  CommunicatorOptions options;
  options.timeout = std::chrono::seconds(20);
  auto pp = make_communicator(
      c10::make_intrusive<c10d::PrefixStore>("pp" + std::to_string(replica), store), rank, pp_size,
      options);
  auto dp =
      make_communicator(c10::make_intrusive<c10d::PrefixStore>("dp" + std::to_string(rank), store),
                        replica, dp_size, options);
  return {pp, dp};
}

TEST(DataParallelTest, TwoReplicasEqualOneProcessOnTheWholeBatch) {
  constexpr int kPp = 2, kDp = 2, kMicrobatches = 4, kMbs = 2;
  torch::manual_seed(11);
  const at::Tensor x = torch::randn({kDp * kMicrobatches * kMbs, 3, testing::kHidden});
  const at::Tensor l = torch::randn({kDp * kMicrobatches * kMbs, 3, testing::kHidden});
  std::vector<std::shared_ptr<testing::MlpStage>> ref = {make_mlp_stage(0), make_mlp_stage(1)};
  auto xs = x.split(kMbs), ls = l.split(kMbs);
  for (std::size_t m = 0; m < xs.size(); ++m) {
    mse(ref[1]->forward({}, ref[0]->forward({}, {xs[m]})), {ls[m]}).backward();
  }
  // thread index = replica * kPp + pipeline rank
  std::vector<StagePtr> modules;
  for (int i = 0; i < kPp * kDp; ++i) modules.push_back(make_mlp_stage(i % kPp));
  std::vector<std::vector<TraceEvent>> traces(kPp);
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto errors = testing::run_ranks(kPp * kDp, [&](int index, CommunicatorPtr) {
    const int replica = index / kPp, rank = index % kPp;
    auto [pp, dp] = connect_grid(store, replica, rank, kPp, kDp);
    PipelineOptions options;
    options.data_parallel = dp;
    options.trace = true;
    Pipeline pipeline("zb1p", {modules[index]}, pp, options);
    const int64_t share = x.size(0) / kDp;
    pipeline.step(rank == 0 ? TensorList{x.narrow(0, replica * share, share)} : TensorList{},
                  kMicrobatches, mse,
                  rank == kPp - 1 ? TensorList{l.narrow(0, replica * share, share)} : TensorList{});
    if (replica == 0) traces[rank] = pipeline.executor().trace().events();
  });
  for (auto& e : errors) ASSERT_EQ(e, nullptr) << testing::message_of(e);
  for (int i = 0; i < kPp * kDp; ++i) {
    auto ours = modules[i]->named_parameters();
    auto theirs = ref[i % kPp]->named_parameters();
    for (auto& p : ours) {
      // Averaged over replicas: half of the sum over the whole batch.
      const at::Tensor want = theirs[p.key()].grad() / kDp;
      EXPECT_TRUE(torch::allclose(p.value().grad(), want, 1e-5, 1e-7))
          << "thread " << i << " " << p.key() << " max diff "
          << (p.value().grad() - want).abs().max().item<double>();
    }
  }
  const std::string json = to_chrome_trace_json(traces);
  EXPECT_NE(json.find("\"traceEvents\""), std::string::npos);
  EXPECT_NE(json.find("\"name\":\"F d0 s1 mb3\",\"cat\":\"compute\",\"pid\":1"), std::string::npos)
      << json.substr(0, 2000);
  EXPECT_NE(json.find("\"name\":\"W d0 s0 mb0\",\"cat\":\"compute\",\"pid\":0"), std::string::npos);
  EXPECT_NE(json.find("\"cat\":\"wait\""), std::string::npos);
  EXPECT_NE(json.find("\"cat\":\"send\""), std::string::npos);
}

// Gradient accumulation: three DualPipe steps on PP=2 x DP=2 before one optimiser step give the
// gradients of all the steps' summed losses, averaged over the replicas: the mirror-copy sum and
// the replica average count each step once (summing the whole .grad() again would count the
// first step's gradients three times on every copy).
TEST(DataParallelTest, DualPipeAccumulatesOverStepsWithoutCountingTwice) {
  constexpr int kPp = 2, kDp = 2, kMicrobatches = 4, kMbs = 2, kSteps = 3;
  torch::manual_seed(12);
  const int64_t rows = kDp * kMicrobatches * kMbs;
  std::vector<at::Tensor> x, l;
  for (int s = 0; s < kSteps; ++s) {
    x.push_back(torch::randn({rows, 3, testing::kHidden}));
    l.push_back(torch::randn({rows, 3, testing::kHidden}));
  }
  std::vector<std::shared_ptr<testing::MlpStage>> ref = {make_mlp_stage(0), make_mlp_stage(1)};
  for (int s = 0; s < kSteps; ++s) {
    auto xs = x[s].split(kMbs), ls = l[s].split(kMbs);
    for (std::size_t m = 0; m < xs.size(); ++m) {
      mse(ref[1]->forward({}, ref[0]->forward({}, {xs[m]})), {ls[m]}).backward();
    }
  }
  // thread index = replica * kPp + pipeline rank; each rank holds stage r and a copy of 1 - r.
  std::vector<std::vector<StagePtr>> modules(kPp * kDp);
  for (int i = 0; i < kPp * kDp; ++i) {
    const int rank = i % kPp;
    modules[i] = {make_mlp_stage(rank), make_mlp_stage(kPp - 1 - rank)};
  }
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto errors = testing::run_ranks(kPp * kDp, [&](int index, CommunicatorPtr) {
    const int replica = index / kPp, rank = index % kPp;
    auto [pp, dp] = connect_grid(store, replica, rank, kPp, kDp);
    PipelineOptions options;
    options.data_parallel = dp;
    DualPipe pipeline(modules[index][0], modules[index][1], pp, options);
    const int64_t share = rows / kDp;
    for (int s = 0; s < kSteps; ++s) {
      // Both pipeline ranks are first and last ranks: each takes its half of the replica's share.
      const at::Tensor mine = x[s].narrow(0, replica * share, share);
      const at::Tensor labels = l[s].narrow(0, replica * share, share);
      const LocalBatch batch = local_batch("dualpipe", kPp, rank, kMicrobatches, {mine}, {labels});
      pipeline.step(batch.inputs, kMicrobatches, mse, batch.labels);
    }
  });
  for (auto& e : errors) ASSERT_EQ(e, nullptr) << testing::message_of(e);
  for (int i = 0; i < kPp * kDp; ++i) {
    for (int slot = 0; slot < 2; ++slot) {
      const int stage = slot == 0 ? i % kPp : kPp - 1 - i % kPp;
      auto theirs = ref[stage]->named_parameters();
      for (auto& p : modules[i][slot]->named_parameters()) {
        const at::Tensor want = theirs[p.key()].grad() / kDp;
        EXPECT_TRUE(torch::allclose(p.value().grad(), want, 1e-5, 1e-6))
            << "thread " << i << " slot " << slot << " " << p.key() << " max diff "
            << (p.value().grad() - want).abs().max().item<double>();
      }
    }
  }
}

}  // namespace
}  // namespace dualpipe::runtime

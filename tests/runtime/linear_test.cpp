#include "dualpipe/runtime/linear.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "dualpipe/runtime/weight_grad_store.h"

namespace dualpipe::runtime {
namespace {

TEST(LinearTest, MatchesTorchLinearInitAndForward) {
  torch::manual_seed(5);
  torch::nn::Linear theirs(16, 8);
  torch::manual_seed(5);
  Linear ours(16, 8);
  EXPECT_TRUE(torch::equal(ours->weight, theirs->weight));
  EXPECT_TRUE(torch::equal(ours->bias, theirs->bias));
  const at::Tensor x = torch::randn({3, 5, 16});
  EXPECT_TRUE(torch::allclose(ours(x), theirs(x)));
}

TEST(LinearTest, DeferredWeightGradRunsOnlyInW) {
  torch::manual_seed(1);
  Linear deferred(16, 8), immediate(16, 8);
  immediate->weight.data().copy_(deferred->weight.data());
  immediate->bias.data().copy_(deferred->bias.data());
  const at::Tensor x = torch::randn({3, 5, 16});
  const at::Tensor x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
  immediate(x1).pow(2).sum().backward();

  WeightGradStore store;
  store.begin_group();
  {
    DeferWeightGradGuard guard(&store);
    deferred(x2).pow(2).sum().backward();
  }
  store.end_group();
  // Bz: input gradient now, weight gradient not yet.
  EXPECT_TRUE(torch::equal(x2.grad(), x1.grad()));
  EXPECT_FALSE(deferred->weight.grad().defined());
  EXPECT_FALSE(deferred->bias.grad().defined());
  ASSERT_EQ(store.num_queued(), 1u);
  // W: the same gradients as the immediate backward.
  store.pop_and_run();
  EXPECT_TRUE(torch::equal(deferred->weight.grad(), immediate->weight.grad()));
  EXPECT_TRUE(torch::equal(deferred->bias.grad(), immediate->bias.grad()));
  EXPECT_EQ(store.num_queued(), 0u);
  EXPECT_THROW(store.pop_and_run(), std::logic_error);
}

// bias(false), as every projection of the MoE block has it: same parameters as torch::nn::Linear,
// the same gradients, and a deferrable weight gradient.
TEST(LinearTest, WithoutBiasMatchesTorchLinearAndDefers) {
  const auto options = torch::nn::LinearOptions(16, 8).bias(false);
  torch::manual_seed(7);
  torch::nn::Linear theirs(options);
  torch::manual_seed(7);
  Linear ours(options);
  ASSERT_EQ(ours->parameters().size(), 1u);
  EXPECT_FALSE(ours->bias.defined());
  EXPECT_TRUE(torch::equal(ours->weight, theirs->weight));
  const at::Tensor x = torch::randn({3, 5, 16});
  const at::Tensor x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
  EXPECT_TRUE(torch::equal(ours(x), theirs(x)));
  theirs(x1).pow(2).sum().backward();

  WeightGradStore store;
  store.begin_group();
  {
    DeferWeightGradGuard guard(&store);
    ours(x2).pow(2).sum().backward();
  }
  store.end_group();
  EXPECT_TRUE(torch::allclose(x2.grad(), x1.grad(), 1e-6, 1e-6));
  EXPECT_FALSE(ours->weight.grad().defined());
  ASSERT_EQ(store.num_queued(), 1u);
  store.pop_and_run();
  EXPECT_TRUE(torch::allclose(ours->weight.grad(), theirs->weight.grad(), 1e-6, 1e-5));
}

TEST(LinearTest, WithoutGuardBehavesLikeAutograd) {
  Linear lin(4, 3);
  const at::Tensor x = torch::randn({2, 4});
  lin(x).sum().backward();
  EXPECT_TRUE(lin->weight.grad().defined());
  EXPECT_TRUE(lin->bias.grad().defined());
  EXPECT_EQ(DeferWeightGradGuard::current(), nullptr);
}

TEST(LinearTest, GroupsRunInFifoOrder) {
  WeightGradStore store;
  std::vector<int> order;
  for (int g = 0; g < 3; ++g) {
    store.begin_group();
    store.push([&order, g] { order.push_back(g); });
    store.end_group();
  }
  store.pop_and_run();
  store.pop_and_run();
  store.pop_and_run();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

}  // namespace
}  // namespace dualpipe::runtime

namespace dualpipe::runtime {
namespace {

// CUDA runs backward on the autograd engine's device threads, where the executor's thread-local
// guard is not set. A Linear forwarded under an executor's route finds the store through the
// route on whichever thread its backward runs: here a plain std::thread, on CPU.
TEST(LinearRoute, BackwardOnAnotherThreadDefersToTheRoutesStore) {
  torch::manual_seed(1);
  Linear fc(4, 3);
  const at::Tensor x = torch::randn({2, 4}, torch::requires_grad());
  auto route = std::make_shared<WeightGradRoute>();
  WeightGradStore store;
  at::Tensor loss;
  {
    WeightGradRouteGuard route_guard(route);
    loss = fc(x).sum();
    store.begin_group();
    DeferWeightGradGuard defer(&store);  // on this thread; the backward runs on another
    EXPECT_EQ(route->store(), &store);
    std::thread([&] {
      EXPECT_EQ(DeferWeightGradGuard::current(), nullptr);
      loss.backward();
    }).join();
    store.end_group();
  }
  EXPECT_EQ(route->store(), nullptr) << "the guard restores the route";
  EXPECT_TRUE(x.grad().defined()) << "input gradient computed in B";
  EXPECT_FALSE(fc->weight.grad().defined()) << "weight gradient deferred, not computed";
  ASSERT_EQ(store.num_queued(), 1u);
  store.pop_and_run();
  ASSERT_TRUE(fc->weight.grad().defined());
  // Equal to computing it at once.
  Linear again(4, 3);
  again->weight.data().copy_(fc->weight.detach());
  again->bias.data().copy_(fc->bias.detach());
  again(x.detach()).sum().backward();
  EXPECT_TRUE(torch::equal(fc->weight.grad(), again->weight.grad()));
  EXPECT_TRUE(torch::equal(fc->bias.grad(), again->bias.grad()));
}

TEST(LinearRoute, WithoutDeferralTheRouteComputesAtOnceOnAnyThread) {
  Linear fc(4, 3);
  auto route = std::make_shared<WeightGradRoute>();
  WeightGradRouteGuard route_guard(route);
  at::Tensor loss = fc(torch::randn({2, 4})).sum();
  DeferWeightGradGuard no_defer(nullptr);
  std::thread([&] { loss.backward(); }).join();
  EXPECT_TRUE(fc->weight.grad().defined());
}

}  // namespace
}  // namespace dualpipe::runtime

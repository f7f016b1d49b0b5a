#include "dualpipe/moe/moe_layer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "rank_threads.h"
#include "small_config.h"

namespace dualpipe::moe {
namespace {

using testing::max_abs_diff;
using testing::run_ranks;

// NOTE: fp32 tolerance for EP vs dense: the expert matmuls see their rows in other batches and
// the expert weight gradients sum the ranks' contributions in another order.
constexpr double kTolerance = 1e-6;

// Logit bias forcing token t to the experts choice[t] (a large equal bias on the chosen ones
// keeps their softmax weights non-trivial).
at::Tensor force_routing(const std::vector<std::vector<int64_t>>& choice, int64_t num_experts) {
  at::Tensor bias = at::zeros({static_cast<int64_t>(choice.size()), num_experts});
  for (size_t t = 0; t < choice.size(); ++t) {
    for (int64_t e : choice[t]) bias[t][e] = 20.0;
  }
  return bias;
}

TEST(MoELayerTest, DenseMatchesPerTokenFormula) {
  at::manual_seed(1);
  ModelConfig config = testing::small_config();
  MoELayer layer(config);
  at::Tensor x = at::randn({9, config.hidden_size});
  at::Tensor y = layer->forward(x, nullptr);
  Routing routing = layer->route(x);
  auto experts = layer->named_children()["experts"];
  for (int64_t t = 0; t < x.size(0); ++t) {
    at::Tensor expected = layer->shared_forward(x[t].unsqueeze(0))[0];
    for (int64_t k = 0; k < config.top_k; ++k) {
      int64_t e = routing.expert_ids[t][k].item<int64_t>();
      auto expert = experts->children()[e]->as<SwiGLUExpertImpl>();
      expected = expected + routing.weights[t][k] * expert->forward(x[t].unsqueeze(0))[0];
    }
    EXPECT_LT(max_abs_diff(y[t], expected), kTolerance) << "token " << t;
  }
}

TEST(MoELayerTest, RejectsExpertsNotDivisibleByEpSize) {
  ModelConfig config = testing::small_config();
  config.num_experts = 6;
  try {
    MoELayer layer(config, 0, 4);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_experts=6, ep_size=4"), std::string::npos)
        << e.what();
  }
}

TEST(CommStreamTest, AllToAllWithZeroSizeSplits) {
  // Rank 0 sends 3 rows to itself and none to rank 1; rank 1 sends no rows at all.
  run_ranks(2, [](int rank, runtime::CommunicatorPtr comm) {
    CommStream stream(comm);
    at::Tensor input = rank == 0 ? at::arange(12, at::kFloat).view({3, 4}) : at::zeros({0, 4});
    std::vector<int64_t> send = rank == 0 ? std::vector<int64_t>{3, 0} : std::vector<int64_t>{0, 0};
    std::vector<int64_t> recv = rank == 0 ? std::vector<int64_t>{3, 0} : std::vector<int64_t>{0, 0};
    at::Tensor out = stream.all_to_all(input, send, recv, "zero").wait();
    if (rank == 0) {
      EXPECT_TRUE(out.equal(input));
    } else {
      EXPECT_EQ(out.size(0), 0);
      EXPECT_EQ(out.size(1), 4);
    }
    EXPECT_EQ(stream.exchange_counts({rank, 10 + rank}),
              (std::vector<int64_t>{rank == 0 ? 0 : 10, rank == 0 ? 1 : 11}));
  });
}

// Hand-written routings for EP=2 with 4 experts (rank 0 owns 0,1; rank 1 owns 2,3); an empty
// entry means "let the router decide".
struct RoutingCase {
  std::string name;
  std::vector<std::vector<std::vector<int64_t>>> per_rank;  // [rank][token] -> experts
  std::vector<int64_t> tokens_per_rank;
};

class ExpertParallelTest : public ::testing::TestWithParam<RoutingCase> {};

TEST_P(ExpertParallelTest, MatchesDenseLayer) {
  const RoutingCase& c = GetParam();
  constexpr int kEp = 2;
  ModelConfig config = testing::small_config();
  at::manual_seed(7);
  MoELayer dense(config);
  std::vector<at::Tensor> inputs, grads, biases(kEp);
  for (int r = 0; r < kEp; ++r) {
    inputs.push_back(at::randn({c.tokens_per_rank[r], config.hidden_size}));
    grads.push_back(at::randn({c.tokens_per_rank[r], config.hidden_size}));
    if (!c.per_rank.empty()) biases[r] = force_routing(c.per_rank[r], config.num_experts);
  }
  // Dense reference: each rank's tokens through the layer with all experts.
  std::vector<at::Tensor> dense_out, dense_grad_in;
  std::map<std::string, at::Tensor> router_grad_sum;
  for (int r = 0; r < kEp; ++r) {
    dense->router()->set_logit_bias(biases[r]);
    at::Tensor x = inputs[r].clone().requires_grad_();
    at::Tensor y = dense->forward(x, nullptr);
    y.backward(grads[r]);
    dense_out.push_back(y.detach());
    dense_grad_in.push_back(x.grad());
  }
  auto dense_params = dense->named_parameters();

  std::vector<std::map<std::string, at::Tensor>> ep_grads(kEp);
  run_ranks(kEp, [&](int rank, runtime::CommunicatorPtr comm) {
    CommStream stream(comm);
    MoELayer layer(config, rank, kEp);
    layer->copy_from_dense(*dense);
    layer->router()->set_logit_bias(biases[rank]);
    at::Tensor x = inputs[rank].clone().requires_grad_();
    at::Tensor y = layer->forward(x, &stream);
    y.backward(grads[rank]);
    EXPECT_LT(max_abs_diff(y, dense_out[rank]), kTolerance) << "rank " << rank;
    EXPECT_LT(max_abs_diff(x.grad(), dense_grad_in[rank]), kTolerance) << "rank " << rank;
    for (auto& p : layer->named_parameters()) {
      ep_grads[rank][p.key()] =
          p.value().grad().defined() ? p.value().grad().clone() : at::Tensor();
    }
  });
  // Expert weights live on one rank; replicated weights (router, shared) get per-rank gradients
  // that sum to the dense gradient.
  for (auto& p : dense_params) {
    const std::string& name = p.key();
    at::Tensor expected = p.value().grad();
    at::Tensor got;
    if (name.rfind("experts.", 0) == 0) {
      int64_t e = std::stoll(name.substr(8, name.find('.', 8) - 8));
      int owner = static_cast<int>(e / 2);
      std::string local = "experts." + std::to_string(e % 2) + name.substr(name.find('.', 8));
      got = ep_grads[owner][local];
    } else {
      for (int r = 0; r < kEp; ++r) {
        at::Tensor g = ep_grads[r][name];
        if (g.defined()) got = got.defined() ? got + g : g;
      }
    }
    ASSERT_EQ(expected.defined(), got.defined()) << name;
    if (expected.defined()) {
      EXPECT_LT(max_abs_diff(got, expected), kTolerance) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Routings, ExpertParallelTest,
    ::testing::Values(
        RoutingCase{"router", {}, {6, 9}},
        // Every token to experts 0 and 1: rank 1 receives nothing, experts 2 and 3 are empty.
        RoutingCase{"all_to_rank0",
                    {{{0, 1}, {1, 0}, {0, 1}}, {{0, 1}, {1, 0}, {0, 1}, {0, 1}, {1, 0}}},
                    {3, 5}},
        // Uneven: rank 0 sends only to rank 1's experts, rank 1 mostly to rank 0; expert 2 is
        // empty.
        RoutingCase{"uneven",
                    {{{3, 1}, {3, 1}, {1, 3}, {3, 1}},
                     {{0, 1}, {0, 3}, {1, 0}, {0, 1}, {1, 0}, {0, 1}, {3, 0}}},
                    {4, 7}},
        // One token on rank 0, its pair spread over both ranks.
        RoutingCase{"single_token", {{{2, 0}}, {{1, 3}, {3, 2}}}, {1, 2}}),
    [](const ::testing::TestParamInfo<RoutingCase>& info) { return info.param.name; });

}  // namespace
}  // namespace dualpipe::moe

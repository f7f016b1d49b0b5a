// Expert placements in the MoE layer (EPLB): routing to replicas, summed replica gradients, and
// moving experts with their optimiser state. A layer on any placement must compute what the
// same model on the trivial placement computes.
#include "dualpipe/moe/expert_replicas.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "dualpipe/eplb/rebalance.h"
#include "rank_threads.h"
#include "small_config.h"

namespace dualpipe::moe {
namespace {

using testing::max_abs_diff;
using testing::run_ranks;

// NOTE: with replicas an expert's rows are split over several matmuls and its weight gradient
// is the sum of the replicas' partial sums, so fp32 rounding differs from one matmul.
constexpr double kTolerance = 1e-5;
constexpr auto kTimeout = std::chrono::seconds(30);
const runtime::CommunicatorPtr kNoGroup;  // ep_size 1: nothing to communicate

std::vector<at::Tensor> grads_of(SwiGLUExpertImpl& expert) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : expert.parameters()) out.push_back(p.grad());
  return out;
}

std::vector<at::Tensor> params_of(SwiGLUExpertImpl& expert) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : expert.parameters()) out.push_back(p.detach().clone());
  return out;
}

// What one pass of the layer gives: outputs, input gradients, and the weight gradients of every
// logical expert (taken from its replicas, which must all hold the same after the sum).
struct Pass {
  at::Tensor out;
  at::Tensor grad_in;
  std::map<int, std::vector<at::Tensor>> expert_grads;
};

Pass run_pass(MoELayerImpl& layer, CommStream* stream, const runtime::CommunicatorPtr& comm,
              const at::Tensor& input, const at::Tensor& grad_out) {
  Pass pass;
  at::Tensor x = input.clone().requires_grad_();
  at::Tensor y = layer.forward(x, stream);
  y.backward(grad_out);
  sum_replica_gradients({&layer}, comm, kTimeout);
  pass.out = y.detach();
  pass.grad_in = x.grad();
  for (int64_t slot = 0; slot < layer.num_local_experts(); ++slot) {
    const int logical = layer.physical_to_logical()[layer.first_expert() + slot];
    std::vector<at::Tensor> grads = grads_of(layer.local_expert(slot));
    auto [it, fresh] = pass.expert_grads.emplace(logical, grads);
    if (!fresh) {
      for (size_t i = 0; i < grads.size(); ++i) {
        EXPECT_EQ(grads[i].defined(), it->second[i].defined()) << "expert " << logical;
        if (grads[i].defined()) {
          EXPECT_TRUE(grads[i].equal(it->second[i]))
              << "replicas of expert " << logical << " differ";
        }
      }
    }
  }
  return pass;
}

void expect_close(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want,
                  double tolerance, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].defined(), want[i].defined()) << what << " tensor " << i;
    if (!got[i].defined()) continue;
    if (tolerance == 0) {
      EXPECT_TRUE(got[i].equal(want[i]))
          << what << " tensor " << i << " differs by " << max_abs_diff(got[i], want[i]);
    } else {
      EXPECT_LT(max_abs_diff(got[i], want[i]), tolerance) << what << " tensor " << i;
    }
  }
}

ModelConfig with_redundant(int64_t redundant) {
  ModelConfig config = testing::small_config();
  config.num_redundant_experts = redundant;
  return config;
}

TEST(ExpertPlacementTest, RedundantSlotsStartAsCopiesAndDrawNothing) {
  at::manual_seed(3);
  MoELayer plain(with_redundant(0));
  const at::Tensor after_plain = at::randn({4});
  at::manual_seed(3);
  MoELayer redundant(with_redundant(3));
  const at::Tensor after_redundant = at::randn({4});
  EXPECT_TRUE(after_plain.equal(after_redundant)) << "redundant slots drew random numbers";
  ASSERT_EQ(redundant->num_local_experts(), 7);
  EXPECT_EQ(redundant->physical_to_logical(), (std::vector<int>{0, 1, 2, 3, 0, 1, 2}));
  EXPECT_EQ(redundant->replicas_of(1), (std::vector<int>{1, 5}));
  EXPECT_EQ(redundant->replicas_of(3), (std::vector<int>{3}));
  for (int64_t slot = 0; slot < 7; ++slot) {
    expect_close(params_of(redundant->local_expert(slot)), params_of(plain->local_expert(slot % 4)),
                 0, "slot " + std::to_string(slot));
  }
  auto plain_params = plain->named_parameters();
  for (const auto& item : redundant->named_parameters()) {
    if (item.key().rfind("experts.", 0) == 0) continue;
    EXPECT_TRUE(item.value().equal(plain_params[item.key()])) << item.key();
  }
}

TEST(ExpertPlacementTest, RejectsBadMapsAndSizesWithTheValues) {
  MoELayer layer(with_redundant(2));
  auto expect_error = [&](const std::vector<int>& map, const std::string& mention) {
    try {
      layer->set_physical_to_logical(map);
      FAIL() << "expected std::invalid_argument for " << mention;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(mention), std::string::npos) << e.what();
    }
  };
  expect_error({0, 1, 2, 3}, "one entry per physical expert (6), got 4");
  expect_error({0, 1, 2, 3, 4, 0}, "physical expert 4 holds expert 4, outside [0, 4)");
  expect_error({0, 1, 2, 0, 1, 2}, "expert 3 has no physical slot");
  EXPECT_EQ(layer->physical_to_logical(), (std::vector<int>{0, 1, 2, 3, 0, 1}));
  try {
    MoELayer odd(with_redundant(1), 0, 2);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_experts=4 + num_redundant_experts=1 = 5 physical, "
                                         "ep_size=2"),
              std::string::npos)
        << e.what();
  }
}

TEST(ExpertPlacementTest, CountsTrainingTokensPerLogicalExpert) {
  at::manual_seed(5);
  ModelConfig config = with_redundant(2);
  MoELayer layer(config);
  layer->set_physical_to_logical({2, 2, 0, 1, 3, 2});
  at::Tensor x = at::randn({13, config.hidden_size});
  layer->forward(x, nullptr);
  const std::vector<int64_t> counts = layer->token_counts();
  int64_t total = 0;
  const at::Tensor ids = layer->route(x).expert_ids;
  for (int e = 0; e < 4; ++e) {
    EXPECT_EQ(counts[e], ids.eq(e).sum().item<int64_t>()) << "expert " << e;
    total += counts[e];
  }
  EXPECT_EQ(total, 13 * config.top_k);
  {
    at::NoGradGuard no_grad;  // evaluation does not count
    layer->forward(x, nullptr);
  }
  EXPECT_EQ(layer->token_counts(), counts);
  layer->forward(x, nullptr);
  for (int e = 0; e < 4; ++e) EXPECT_EQ(layer->token_counts()[e], 2 * counts[e]);
  layer->reset_token_counts();
  EXPECT_EQ(layer->token_counts(), (std::vector<int64_t>{0, 0, 0, 0}));
}

TEST(ExpertPlacementTest, ReplicasShareTheRowsOfTheirExpert) {
  at::manual_seed(9);
  ModelConfig config = with_redundant(2);
  MoELayer layer(config);
  layer->set_physical_to_logical({0, 1, 2, 3, 1, 1});  // expert 1 on slots 1, 4 and 5
  const at::Tensor bias =
      at::zeros({12, 4}).index_fill_(1, at::tensor(std::vector<int64_t>{1, 3}), 20.0);
  layer->router()->set_logit_bias(bias);
  const DispatchPlan plan = layer->make_plan(layer->route(at::randn({12, config.hidden_size})));
  EXPECT_EQ(plan.logical_counts, (std::vector<int64_t>{0, 12, 0, 12}));
  EXPECT_EQ(plan.send_counts, (std::vector<int64_t>{0, 4, 0, 12, 4, 4}));
}

// Same model, three placements at EP=1: trivial; a pure permutation (bit for bit); replicas.
TEST(ExpertPlacementTest, AnyPlacementComputesWhatTheTrivialOneDoes) {
  at::manual_seed(11);
  ModelConfig config = with_redundant(0);
  MoELayer trivial(config);
  const at::Tensor x = at::randn({40, config.hidden_size});
  const at::Tensor dy = at::randn({40, config.hidden_size});
  const Pass want = run_pass(*trivial, nullptr, kNoGroup, x, dy);

  struct Case {
    int64_t redundant;
    std::vector<int> map;
    double tolerance;
  };
  for (const Case& c : {Case{0, {2, 0, 3, 1}, 0.0}, Case{3, {1, 3, 3, 0, 2, 1, 3}, kTolerance}}) {
    ModelConfig placed_config = with_redundant(c.redundant);
    MoELayer placed(placed_config);
    placed->set_physical_to_logical(c.map);
    placed->copy_from_dense(*trivial);
    const Pass got = run_pass(*placed, nullptr, kNoGroup, x, dy);
    const std::string name = "redundant=" + std::to_string(c.redundant);
    expect_close({got.out, got.grad_in}, {want.out, want.grad_in}, c.tolerance, name);
    for (const auto& [expert, grads] : want.expert_grads) {
      ASSERT_EQ(got.expert_grads.count(expert), 1u) << name << " expert " << expert;
      expect_close(got.expert_grads.at(expert), grads, c.tolerance,
                   name + " expert " + std::to_string(expert));
    }
  }
}

// EP=2, 6 physical slots (3 per rank), experts 0 and 3 replicated across the ranks, against the
// dense single-process layer on the trivial placement.
TEST(ExpertPlacementTest, ExpertParallelReplicasMatchTheDenseLayer) {
  constexpr int kEp = 2;
  at::manual_seed(13);
  MoELayer dense(with_redundant(0));
  const int64_t hidden = dense->config().hidden_size;
  std::vector<at::Tensor> inputs = {at::randn({17, hidden}), at::randn({9, hidden})};
  std::vector<at::Tensor> grads = {at::randn({17, hidden}), at::randn({9, hidden})};
  std::vector<at::Tensor> dense_out, dense_grad_in;
  for (int r = 0; r < kEp; ++r) {
    at::Tensor x = inputs[r].clone().requires_grad_();
    at::Tensor y = dense->forward(x, nullptr);
    y.backward(grads[r]);
    dense_out.push_back(y.detach());
    dense_grad_in.push_back(x.grad());
  }
  std::map<int, std::vector<at::Tensor>> dense_expert_grads;
  for (int e = 0; e < 4; ++e) dense_expert_grads[e] = grads_of(dense->local_expert(e));

  run_ranks(kEp, [&](int rank, runtime::CommunicatorPtr comm) {
    CommStream stream(comm);
    MoELayer layer(with_redundant(2), rank, kEp);
    layer->set_physical_to_logical({3, 0, 1, 0, 2, 3});
    layer->copy_from_dense(*dense);
    const Pass got = run_pass(*layer, &stream, comm, inputs[rank], grads[rank]);
    const std::string name = "rank " + std::to_string(rank);
    expect_close({got.out, got.grad_in}, {dense_out[rank], dense_grad_in[rank]}, kTolerance, name);
    for (const auto& [expert, g] : got.expert_grads) {
      expect_close(g, dense_expert_grads.at(expert), kTolerance,
                   name + " expert " + std::to_string(expert));
    }
  });
}

TEST(ExpertPlacementTest, SumOfReplicaGradientsKeepsUntouchedExpertsWithout) {
  at::manual_seed(17);
  ModelConfig config = with_redundant(2);
  MoELayer layer(config);
  layer->set_physical_to_logical({0, 1, 2, 3, 0, 2});
  // Every token to experts 0 and 1: experts 2 and 3 (and 2's replica) see nothing.
  layer->router()->set_logit_bias(
      at::zeros({6, 4}).index_fill_(1, at::tensor(std::vector<int64_t>{0, 1}), 20.0));
  const Pass pass =
      run_pass(*layer, nullptr, kNoGroup, at::randn({6, config.hidden_size}), at::randn({6, 16}));
  for (int e : {2, 3}) {
    for (const at::Tensor& g : pass.expert_grads.at(e)) EXPECT_FALSE(g.defined()) << e;
  }
  for (const at::Tensor& g : pass.expert_grads.at(0)) EXPECT_TRUE(g.defined());
}

// Moving experts across EP ranks carries their weights and companions bit for bit, and a pure
// permutation leaves the layer's results bit for bit unchanged.
TEST(ExpertPlacementTest, MoveExpertsCarriesWeightsAndStateAcrossRanks) {
  constexpr int kEp = 2;
  at::manual_seed(19);
  MoELayer dense(with_redundant(0));
  const int64_t hidden = dense->config().hidden_size;
  std::vector<at::Tensor> inputs = {at::randn({11, hidden}), at::randn({14, hidden})};
  std::vector<at::Tensor> grads = {at::randn({11, hidden}), at::randn({14, hidden})};
  std::map<int, std::vector<at::Tensor>> weights;
  for (int e = 0; e < 4; ++e) weights[e] = params_of(dense->local_expert(e));

  for (int64_t redundant : {0, 2}) {
    const std::vector<int> new_map =
        redundant == 0 ? std::vector<int>{3, 1, 0, 2} : std::vector<int>{2, 2, 0, 1, 3, 0};
    run_ranks(kEp, [&](int rank, runtime::CommunicatorPtr comm) {
      CommStream stream(comm);
      MoELayer layer(with_redundant(redundant), rank, kEp);
      layer->copy_from_dense(*dense);
      // Companion state: 2x and -x of each parameter, to see that it travels with it.
      std::map<const void*, std::vector<at::Tensor>> state;
      for (const at::Tensor& p : layer->parameters()) {
        state[p.unsafeGetTensorImpl()] = {p.detach() * 2, -p.detach()};
      }
      const Pass before = run_pass(*layer, &stream, comm, inputs[rank], grads[rank]);
      for (at::Tensor& p : layer->parameters()) p.mutable_grad() = at::Tensor();
      const int changed = move_experts(
          {layer.get()}, {new_map},
          [&](const at::Tensor& p) { return state.at(p.unsafeGetTensorImpl()); }, comm, kTimeout);
      EXPECT_EQ(changed, 1);
      EXPECT_EQ(layer->physical_to_logical(), new_map);
      const std::string name =
          "redundant=" + std::to_string(redundant) + " rank " + std::to_string(rank);
      for (int64_t slot = 0; slot < layer->num_local_experts(); ++slot) {
        const int logical = new_map[layer->first_expert() + slot];
        const std::vector<at::Tensor> params = params_of(layer->local_expert(slot));
        expect_close(params, weights.at(logical), 0, name + " slot " + std::to_string(slot));
        for (size_t i = 0; i < params.size(); ++i) {
          const at::Tensor p = layer->local_expert(slot).parameters()[i];
          const std::vector<at::Tensor>& companions = state.at(p.unsafeGetTensorImpl());
          EXPECT_TRUE(companions[0].equal(weights.at(logical)[i] * 2)) << name;
          EXPECT_TRUE(companions[1].equal(-weights.at(logical)[i])) << name;
        }
      }
      const Pass after = run_pass(*layer, &stream, comm, inputs[rank], grads[rank]);
      const double tolerance = redundant == 0 ? 0.0 : kTolerance;
      expect_close({after.out, after.grad_in}, {before.out, before.grad_in}, tolerance, name);
      // The same map again moves nothing and needs no communication.
      EXPECT_EQ(move_experts({layer.get()}, {new_map}, nullptr, comm, kTimeout), 0);
    });
  }
}

TEST(ExpertPlacementTest, MoveExpertsRejectsABadMapBeforeCommunicating) {
  MoELayer layer(with_redundant(0));
  EXPECT_THROW(move_experts({layer.get()}, {{0, 0, 1, 2}}, nullptr, kNoGroup, kTimeout),
               std::invalid_argument);
  EXPECT_THROW(move_experts({layer.get()}, {}, nullptr, kNoGroup, kTimeout), std::invalid_argument);
  EXPECT_EQ(layer->physical_to_logical(), (std::vector<int>{0, 1, 2, 3}));
}

std::string move_error(MoELayerImpl& layer, const std::vector<std::vector<int>>& new_maps,
                       const CompanionTensors& companions) {
  try {
    move_experts({&layer}, new_maps, companions, kNoGroup, kTimeout);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ExpertPlacementTest, MoveExpertsNamesWhatDoesNotFit) {
  MoELayer layer(with_redundant(0));
  EXPECT_EQ(move_error(*layer, {}, nullptr), "move_experts got 0 placements for 1 layers");
  const at::Tensor parameter = layer->local_expert(0).parameters().front();
  EXPECT_EQ(move_error(*layer, {{3, 1, 0, 2}},
                       [](const at::Tensor&) { return std::vector<at::Tensor>{at::zeros({1})}; }),
            "move_experts: a companion tensor of shape [1] for an expert parameter of shape " +
                c10::str(parameter.sizes()));
  EXPECT_EQ(layer->physical_to_logical(), (std::vector<int>{0, 1, 2, 3}));
}

// The layer's routing realises the balance EPLB plans: rows each EP rank receives for a skewed
// routing, trivial placement vs the planned one with 4 redundant experts over 4 EP ranks.
TEST(ExpertPlacementTest, RoutingRealisesThePlannedBalance) {
  constexpr int kEp = 4, kTokensPerRank = 256;
  ModelConfig config = testing::small_config();
  config.num_experts = 8;
  config.num_redundant_experts = 4;
  // Zipf-like popularity: expert e is chosen with weight 1 / (e + 1); two distinct per token.
  std::mt19937 rng(7);
  std::discrete_distribution<int> pick({1, 1 / 2., 1 / 3., 1 / 4., 1 / 5., 1 / 6., 1 / 7., 1 / 8.});
  std::vector<at::Tensor> biases, inputs;
  std::vector<double> load(8, 0.0);
  for (int r = 0; r < kEp; ++r) {
    at::Tensor bias = at::zeros({kTokensPerRank, 8});
    for (int t = 0; t < kTokensPerRank; ++t) {
      const int a = pick(rng);
      int b = pick(rng);
      while (b == a) b = pick(rng);
      bias[t][a] = 20.0;
      bias[t][b] = 20.0;
      load[a] += 1;
      load[b] += 1;
    }
    biases.push_back(bias);
    inputs.push_back(at::randn({kTokensPerRank, config.hidden_size}));
  }
  const eplb::ExpertPlacement planned = eplb::rebalance_experts({load}, 12, 1, 1, kEp);
  const eplb::ExpertPlacement trivial = eplb::trivial_placement(1, 8, 12, kEp);
  auto rows_per_rank = [&](const std::vector<int>& map) {
    std::vector<double> rows(kEp, 0.0);
    for (int r = 0; r < kEp; ++r) {
      MoELayer layer(config, r, kEp);
      layer->set_physical_to_logical(map);
      layer->router()->set_logit_bias(biases[r]);
      const DispatchPlan plan = layer->make_plan(layer->route(inputs[r]));
      for (int dst = 0; dst < kEp; ++dst) rows[dst] += static_cast<double>(plan.send_splits[dst]);
    }
    return rows;
  };
  auto imbalance = [](const std::vector<double>& rows) {
    double total = 0, peak = 0;
    for (double v : rows) total += v, peak = std::max(peak, v);
    return peak * static_cast<double>(rows.size()) / total;
  };
  const double before = imbalance(rows_per_rank(trivial.physical_to_logical[0]));
  const double after = imbalance(rows_per_rank(planned.physical_to_logical[0]));
  const double predicted_before = eplb::gpu_imbalance(trivial, {load})[0];
  const double predicted_after = eplb::gpu_imbalance(planned, {load})[0];
  std::cout << "rows per EP rank max/mean: trivial " << before << " (planner " << predicted_before
            << "), EPLB " << after << " (planner " << predicted_after << ")\n";
  EXPECT_NEAR(before, predicted_before, 0.02);
  // Round-robin over replicas splits each rank's pairs of an expert to within one row.
  EXPECT_NEAR(after, predicted_after, 0.02);
  EXPECT_GT(before, 1.2);  // the skew is real
  EXPECT_LT(after, 1.1);
}

}  // namespace
}  // namespace dualpipe::moe

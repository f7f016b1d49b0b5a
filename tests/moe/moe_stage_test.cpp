#include "dualpipe/moe/moe_stage.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "rank_threads.h"
#include "small_config.h"

namespace dualpipe::moe {
namespace {

using runtime::MicrobatchId;
using runtime::TensorList;
using testing::max_abs_diff;
using testing::run_ranks;

std::map<std::string, at::Tensor> grads_of(torch::nn::Module& module) {
  std::map<std::string, at::Tensor> grads;
  for (auto& p : module.named_parameters()) {
    grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : at::Tensor();
  }
  return grads;
}

bool same_grads(const std::map<std::string, at::Tensor>& a,
                const std::map<std::string, at::Tensor>& b, std::string* why) {
  for (auto& [name, g] : a) {
    const at::Tensor& h = b.at(name);
    if (g.defined() != h.defined() || (g.defined() && !g.equal(h))) {
      *why =
          name + (g.defined() && h.defined() ? " differs by " + std::to_string(max_abs_diff(g, h))
                                             : " defined on one side only");
      return false;
    }
  }
  return true;
}

// Stage X: first stage (embedding, 2 blocks); stage Y: last stage (1 block, head). A rank of
// DualPipe with PP=2 holds both, so FB ops pair them either way round.
struct Pair {
  std::shared_ptr<MoEStage> x, y;
};

Pair make_pair(const ModelConfig& config, Pair& dense, int ep_rank, int ep_size,
               std::shared_ptr<CommStream> stream) {
  Pair p;
  p.x = std::make_shared<MoEStage>(config, StageOptions{2, true, false, ep_rank, ep_size}, stream);
  p.y = std::make_shared<MoEStage>(config, StageOptions{1, false, true, ep_rank, ep_size}, stream);
  p.x->copy_from_dense(*dense.x);
  p.y->copy_from_dense(*dense.y);
  return p;
}

class OverlapTest : public ::testing::TestWithParam<int> {};

// The FB hook against forward then backward one after the other, in both pairings:
//   (1) forward X mb1  with backward Y mb0 (loss);   (2) forward Y mb1 (criterion) with
//   backward X mb0 (output gradient).
TEST_P(OverlapTest, OverlappedForwardBackwardIsBitwiseSequential) {
  const int ep_size = GetParam();
  ModelConfig config = testing::small_config(11);
  at::manual_seed(3);
  Pair dense;
  dense.x = std::make_shared<MoEStage>(config, StageOptions{2, true, false, 0, 1});
  dense.y = std::make_shared<MoEStage>(config, StageOptions{1, false, true, 0, 1});
  std::vector<at::Tensor> tokens, hidden, labels, grad_out;
  for (int r = 0; r < ep_size; ++r) {
    tokens.push_back(at::randint(config.vocab_size, {2, 5}, at::kLong));
    hidden.push_back(at::randn({2, 5, config.hidden_size}));
    labels.push_back(at::randint(config.vocab_size, {2, 5}, at::kLong));
    grad_out.push_back(at::randn({2, 5, config.hidden_size}));
  }
  runtime::Criterion criterion = language_model_criterion(10.0);

  run_ranks(ep_size, [&](int rank, runtime::CommunicatorPtr comm) {
    auto stream = std::make_shared<CommStream>(ep_size > 1 ? comm : runtime::CommunicatorPtr());
    const MicrobatchId x0{0, 0, 0}, x1{0, 0, 1}, y0{0, 1, 0}, y1{0, 1, 1};
    struct Result {
      at::Tensor x1_out, y0_input_grad, y1_loss;
      std::map<std::string, at::Tensor> x_grads, y_grads;
    };
    auto run = [&](bool overlapped) {
      Pair p = make_pair(config, dense, rank, ep_size, stream);
      Result result;
      // Warm-up: forward X mb0 -> Y mb0 (loss).
      TensorList x0_out = p.x->forward(x0, {tokens[rank]});
      at::Tensor y0_in = hidden[rank].clone().requires_grad_();
      TensorList y0_out = p.y->forward(y0, {y0_in});
      at::Tensor y0_loss = criterion(y0_out, {labels[rank]});
      // (1) F(X mb1) with B(Y mb0).
      if (overlapped) {
        runtime::ForwardResult f = p.x->overlapped_forward_backward(
            runtime::ForwardHalf{x1, {tokens[rank].flip(1)}, nullptr, {}}, *p.y,
            runtime::BackwardHalf{y0, {y0_loss}, {}});
        result.x1_out = f.outputs[0].detach();
      } else {
        result.x1_out = p.x->forward(x1, {tokens[rank].flip(1)})[0].detach();
        p.y->backward(y0, {y0_loss}, {});
      }
      result.y0_input_grad = y0_in.grad();
      // (2) F(Y mb1, criterion) with B(X mb0).
      at::Tensor y1_in = hidden[rank].flip(1).clone().requires_grad_();
      if (overlapped) {
        runtime::ForwardResult f = p.y->overlapped_forward_backward(
            runtime::ForwardHalf{y1, {y1_in}, &criterion, {labels[rank]}}, *p.x,
            runtime::BackwardHalf{x0, x0_out, {grad_out[rank]}});
        result.y1_loss = f.loss.detach();
      } else {
        TensorList y1_out = p.y->forward(y1, {y1_in});
        result.y1_loss = criterion(y1_out, {labels[rank]}).detach();
        p.x->backward(x0, x0_out, {grad_out[rank]});
      }
      EXPECT_EQ(p.x->num_contexts(), 1u);
      EXPECT_EQ(p.y->num_contexts(), 1u);
      result.x_grads = grads_of(*p.x);
      result.y_grads = grads_of(*p.y);
      return result;
    };
    Result seq = run(false);
    Result ovl = run(true);
    EXPECT_TRUE(seq.x1_out.equal(ovl.x1_out)) << "rank " << rank;
    EXPECT_TRUE(seq.y0_input_grad.equal(ovl.y0_input_grad)) << "rank " << rank;
    EXPECT_TRUE(seq.y1_loss.equal(ovl.y1_loss)) << "rank " << rank;
    std::string why;
    EXPECT_TRUE(same_grads(seq.x_grads, ovl.x_grads, &why)) << "rank " << rank << ": X " << why;
    EXPECT_TRUE(same_grads(seq.y_grads, ovl.y_grads, &why)) << "rank " << rank << ": Y " << why;
  });
}

INSTANTIATE_TEST_SUITE_P(EpSizes, OverlapTest, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "ep" + std::to_string(info.param);
                         });

// The segmented forward/backward against plain autograd through the unsegmented model
// (tolerance: gradients meeting at a detach point are summed in another order).
TEST(MoEStageTest, SegmentedMatchesUnsegmented) {
  ModelConfig config = testing::small_config(11);
  at::manual_seed(5);
  auto seg = std::make_shared<MoEStage>(config, StageOptions{2, true, true, 0, 1});
  auto ref = std::make_shared<MoEStage>(config, StageOptions{2, true, true, 0, 1});
  ref->copy_from_dense(*seg);
  at::Tensor tokens = at::randint(config.vocab_size, {3, 6}, at::kLong);
  at::Tensor labels = at::randint(config.vocab_size, {3, 6}, at::kLong);
  runtime::Criterion criterion = language_model_criterion(18.0);
  const MicrobatchId id{0, 0, 0};
  TensorList out = seg->forward(id, {tokens});
  at::Tensor loss = criterion(out, {labels});
  seg->backward(id, {loss}, {});
  at::Tensor ref_loss = criterion(ref->forward_reference({tokens}), {labels});
  ref_loss.backward();
  EXPECT_LT(max_abs_diff(loss, ref_loss), 1e-6);
  auto g = grads_of(*seg), h = grads_of(*ref);
  for (auto& [name, grad] : h) {
    ASSERT_EQ(grad.defined(), g[name].defined()) << name;
    if (grad.defined()) {
      EXPECT_LT(max_abs_diff(grad, g[name]), 1e-6) << name;
    }
  }
  EXPECT_EQ(seg->num_contexts(), 0u);
}

}  // namespace
}  // namespace dualpipe::moe

// Deferring weight gradients to the W ops changes when the weight-gradient matmuls run, not what
// they compute: for every schedule, training runtime::Linear stages with the W ops doing the
// deferred work gives the same per-micro-batch losses at every step and the same parameters
// afterwards, bit for bit, as training the same stages with deferral switched off (each B then
// computes its weight gradients itself and the W ops find empty groups).
//
// NOTE: bit-for-bit equality also needs each parameter's gradients to be summed over micro-batches
// in the same order in both runs. It is: W ops run a rank's deferred groups in the order of their
// backwards (FIFO), and the schedules run a stage's non-deferred backwards before its deferred
// ones.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/runtime/weight_grad_store.h"
#include "dualpipe/schedule/registry.h"
#include "mlp_stage.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

using testing::make_mlp_stage;
using testing::mse;

constexpr int kRows = 2;  // per micro-batch
constexpr int kSteps = 3;
constexpr double kLearningRate = 0.1;

// Runs `inner` with the weight-gradient deferral the executor asks for, or with deferral switched
// off. The switch is the library's own: a DeferWeightGradGuard on a null store makes every
// runtime::Linear inside compute its weight gradient at once, in B.
class DeferralSwitchStage : public StageModule {
 public:
  DeferralSwitchStage(StagePtr inner, bool defer_weight_grad)
      : inner_(register_module("inner", std::move(inner))), defer_weight_grad_(defer_weight_grad) {}

  TensorList forward(const MicrobatchId& id, const TensorList& inputs) override {
    return inner_->forward(id, inputs);
  }

  void backward(const MicrobatchId& id, const TensorList& outputs,
                const TensorList& output_grads) override {
    if (!defer_weight_grad_) {
      DeferWeightGradGuard no_deferral(nullptr);
      inner_->backward(id, outputs, output_grads);
      return;
    }
    if (DeferWeightGradGuard::current() == nullptr) {
      inner_->backward(id, outputs, output_grads);
      return;
    }
    const std::vector<at::Tensor> grads_before = parameter_grads();
    inner_->backward(id, outputs, output_grads);
    ++deferred_backwards_;
    if (!same_grads(grads_before, parameter_grads())) ++deferred_backwards_touching_weights_;
  }

  // Backwards run while the executor deferred weight gradients (Bz, or the B half of an FB that
  // defers).
  int deferred_backwards() const { return deferred_backwards_; }
  // How many of those changed a parameter's gradient (0 when the W ops do all of that work).
  int deferred_backwards_touching_weights() const { return deferred_backwards_touching_weights_; }

 private:
  std::vector<at::Tensor> parameter_grads() const {
    std::vector<at::Tensor> grads;
    for (const at::Tensor& p : parameters()) {
      grads.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
    }
    return grads;
  }

  static bool same_grads(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (a[i].defined() != b[i].defined()) return false;
      if (a[i].defined() && !torch::equal(a[i], b[i])) return false;
    }
    return true;
  }

  StagePtr inner_;
  bool defer_weight_grad_;
  int deferred_backwards_ = 0;
  int deferred_backwards_touching_weights_ = 0;
};

struct Case {
  std::string schedule;
  int ranks;
  int microbatches;
};

// For gtest's messages ("zb1p, 4 ranks, 9 micro-batches").
void PrintTo(const Case& c, std::ostream* out) {
  *out << c.schedule << ", " << c.ranks << " ranks, " << c.microbatches << " micro-batches";
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.schedule;
  std::replace(name.begin(), name.end(), '-', '_');  // gtest names: no '-'
  return name + "_pp" + std::to_string(info.param.ranks) + "_mb" +
         std::to_string(info.param.microbatches);
}

// What one training run leaves behind.
struct TrainingRun {
  std::vector<std::vector<at::Tensor>> losses;  // [rank][step]; undefined without a last stage
  std::vector<std::vector<std::shared_ptr<DeferralSwitchStage>>> stages;  // [rank][slot]
};

// Plain SGD, then clears the gradients (so the next step's first gradient is assigned, not added).
void sgd_step(const std::vector<at::Tensor>& params) {
  torch::NoGradGuard no_grad;
  for (at::Tensor p : params) {
    p.sub_(p.grad() * kLearningRate);
    p.mutable_grad() = at::Tensor();
  }
}

// kSteps optimiser steps of case `c` on fresh, seeded stages, deferral on or off.
TrainingRun train(const Case& c, bool defer_weight_grad, const at::Tensor& x, const at::Tensor& y) {
  TrainingRun run;
  run.losses.resize(c.ranks);
  run.stages.resize(c.ranks);
  // Built in this thread: the seeded generator is global.
  for (int rank = 0; rank < c.ranks; ++rank) {
    for (const schedule::StageId& id : Pipeline::stages_for(c.schedule, c.ranks, rank)) {
      run.stages[rank].push_back(
          std::make_shared<DeferralSwitchStage>(make_mlp_stage(id.stage), defer_weight_grad));
    }
  }
  auto errors = testing::run_ranks(c.ranks, [&](int rank, CommunicatorPtr comm) {
    const std::vector<StagePtr> modules(run.stages[rank].begin(), run.stages[rank].end());
    std::vector<at::Tensor> params;
    for (const StagePtr& module : modules) {
      for (const at::Tensor& p : module->parameters()) params.push_back(p);
    }
    Pipeline pipeline(c.schedule, modules, comm);
    const LocalBatch batch = local_batch(c.schedule, c.ranks, rank, c.microbatches, {x}, {y});
    for (int step = 0; step < kSteps; ++step) {
      run.losses[rank].push_back(
          pipeline.step(batch.inputs, c.microbatches, mse, batch.labels).loss);
      sgd_step(params);
    }
  });
  for (auto& e : errors) EXPECT_EQ(e, nullptr) << testing::message_of(e);
  return run;
}

int count_weight_ops(const schedule::Program& program) {
  int count = 0;
  for (const schedule::Op& op : program) count += op.kind == schedule::OpKind::kWeight;
  return count;
}

class DeferredWeightGradTest : public ::testing::TestWithParam<Case> {};

TEST_P(DeferredWeightGradTest, SameLossesAndParametersAsWithoutDeferral) {
  const Case c = GetParam();
  const schedule::Schedule sched = schedule::build_schedule(c.schedule, c.ranks, c.microbatches);
  torch::manual_seed(11);
  const at::Tensor x = torch::randn({c.microbatches * kRows, testing::kHidden});
  const at::Tensor y = torch::randn({c.microbatches * kRows, testing::kHidden});

  const TrainingRun deferred = train(c, /*defer_weight_grad=*/true, x, y);
  const TrainingRun immediate = train(c, /*defer_weight_grad=*/false, x, y);
  if (HasFailure()) return;

  int compared_losses = 0;
  for (int rank = 0; rank < c.ranks; ++rank) {
    // The deferred run really deferred: every W op of the program had a backward whose weight
    // gradients it left alone, so the W ops computed them.
    int deferred_backwards = 0;
    for (const auto& stage : deferred.stages[rank]) {
      deferred_backwards += stage->deferred_backwards();
      EXPECT_EQ(stage->deferred_backwards_touching_weights(), 0) << "rank " << rank;
    }
    EXPECT_EQ(deferred_backwards, kSteps * count_weight_ops(sched.programs[rank]))
        << "rank " << rank;

    for (int step = 0; step < kSteps; ++step) {
      const at::Tensor& want = immediate.losses[rank][step];
      const at::Tensor& got = deferred.losses[rank][step];
      ASSERT_EQ(got.defined(), want.defined()) << "rank " << rank << " step " << step;
      if (!got.defined()) continue;
      EXPECT_TRUE(torch::equal(got, want))
          << "rank " << rank << " step " << step << ": deferred " << got << " immediate " << want;
      compared_losses += got.numel();
    }
    for (std::size_t slot = 0; slot < deferred.stages[rank].size(); ++slot) {
      auto want = immediate.stages[rank][slot]->named_parameters();
      for (const auto& p : deferred.stages[rank][slot]->named_parameters()) {
        EXPECT_TRUE(torch::equal(p.value(), want[p.key()]))
            << "rank " << rank << " slot " << slot << " " << p.key() << " max diff "
            << (p.value() - want[p.key()]).abs().max().item<double>();
      }
    }
  }
  EXPECT_EQ(compared_losses, kSteps * c.microbatches);
}

// Every schedule at 2 and 4 ranks, each with the fewest micro-batches above 2 per rank it accepts
// (odd ones where it takes them).
std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const std::string& name : schedule::schedule_names()) {
    const schedule::ScheduleFacts facts = schedule::schedule_facts(name);
    for (int ranks : {2, 4}) {
      for (int microbatches = 2 * ranks + 1; microbatches <= 8 * ranks; ++microbatches) {
        if (facts.accepts(ranks, microbatches)) {
          cases.push_back({name, ranks, microbatches});
          break;
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllSchedules, DeferredWeightGradTest, ::testing::ValuesIn(all_cases()),
                         case_name);

}  // namespace
}  // namespace dualpipe::runtime

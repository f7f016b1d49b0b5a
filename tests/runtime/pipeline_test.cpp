// Port of the DualPipe reference's own check (examples/example_dualpipe.py): every schedule on
// a stack of MLP stages must give the per-micro-batch losses of a single-process reference bit
// for bit, the same gradients (cosine distance < 1e-12, after the DualPipe copy-sum), the same
// forward-only outputs, the same parameters after optimizer steps, and the simulator's
// activation peak on every rank.

#include "dualpipe/runtime/pipeline.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/sim/simulator.h"
#include "mlp_stage.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

using testing::make_mlp_stage;
using testing::MlpStage;
using testing::mse;

constexpr int kMicrobatchSize = 2;
constexpr int kSeq = 4;
constexpr int kSteps = 3;

struct Case {
  std::string schedule;
  int ranks;
  int microbatches;
  int stages_per_rank = 0;  // schedule::BuildOptions; 0: the schedule's own
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.schedule;
  std::replace(name.begin(), name.end(), '-', '_');  // gtest names: no '-'
  return name + "_pp" + std::to_string(info.param.ranks) + "_mb" +
         std::to_string(info.param.microbatches) +
         (info.param.stages_per_rank > 0 ? "_v" + std::to_string(info.param.stages_per_rank) : "");
}

int model_stage_of(const std::string& schedule, const schedule::StageId& id) {
  return id.stage;  // DualPipe: (0, s) and (1, s) are both copies of model stage s
}

double cosine_distance(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble).reshape(-1), y = b.to(at::kDouble).reshape(-1);
  const double denom = (x.norm() * y.norm()).item<double>();
  if (denom == 0) return x.equal(y) ? 0.0 : 1.0;
  return 1.0 - (x.dot(y)).item<double>() / denom;
}

class PipelineEquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(PipelineEquivalenceTest, MatchesSingleProcessReference) {
  const Case c = GetParam();
  const schedule::Schedule sched =
      schedule::build_schedule(c.schedule, c.ranks, c.microbatches, {c.stages_per_rank});
  const sim::SimResult simulated = sim::simulate(sched, sim::CostModel{});
  const int num_stages = sched.num_stages();
  const bool dualpipe = sched.num_directions() == 2;  // DualPipe and search-dual

  torch::manual_seed(7);
  const at::Tensor x = torch::randn({c.microbatches * kMicrobatchSize, kSeq, testing::kHidden});
  const at::Tensor l = torch::randn({c.microbatches * kMicrobatchSize, kSeq, testing::kHidden});
  const int64_t half = x.size(0) / 2;

  // Reference: one process, every micro-batch through all stages in turn; also the models for
  // the optimizer steps.
  std::vector<std::shared_ptr<MlpStage>> ref;
  for (int s = 0; s < num_stages; ++s) ref.push_back(make_mlp_stage(s));
  std::vector<at::Tensor> ref_params;
  for (auto& m : ref) {
    for (auto& p : m->parameters()) ref_params.push_back(p);
  }
  torch::optim::SGD ref_optimizer(ref_params, torch::optim::SGDOptions(0.1).momentum(0.9));
  std::vector<at::Tensor> ref_losses, ref_outputs;
  std::vector<std::map<std::string, at::Tensor>> ref_grads(num_stages);
  std::vector<std::map<std::string, at::Tensor>> ref_final(num_stages);
  for (int step = 0; step < kSteps; ++step) {
    ref_optimizer.zero_grad();
    auto xs = x.split(kMicrobatchSize), ls = l.split(kMicrobatchSize);
    for (int m = 0; m < c.microbatches; ++m) {
      at::Tensor h = xs[m];
      for (int s = 0; s < num_stages; ++s) h = ref[s]->forward({}, {h})[0];
      at::Tensor loss = mse({h}, {ls[m]});
      loss.backward();
      if (step == 0) {
        ref_losses.push_back(loss.detach());
        ref_outputs.push_back(h.detach());
      }
    }
    if (step == 0) {
      for (int s = 0; s < num_stages; ++s) {
        for (auto& p : ref[s]->named_parameters()) ref_grads[s][p.key()] = p.value().grad().clone();
      }
    }
    ref_optimizer.step();
  }
  for (int s = 0; s < num_stages; ++s) {
    for (auto& p : ref[s]->named_parameters()) ref_final[s][p.key()] = p.value().detach().clone();
  }

  // The pipeline, built in this thread (the seeded generator is global).
  std::vector<std::vector<StagePtr>> modules(c.ranks);
  std::vector<std::vector<int>> model_stage(c.ranks);
  for (int r = 0; r < c.ranks; ++r) {
    for (int slot = 0; slot < sched.placement.num_slots(r); ++slot) {
      const int ms = model_stage_of(c.schedule, sched.placement.stage_at(r, slot));
      modules[r].push_back(make_mlp_stage(ms));
      model_stage[r].push_back(ms);
    }
  }
  std::vector<StepResult> results(c.ranks), inference(c.ranks);
  std::vector<int> peaks(c.ranks);
  auto errors = testing::run_ranks(c.ranks, [&](int rank, CommunicatorPtr comm) {
    PipelineOptions options;
    options.build.stages_per_rank = c.stages_per_rank;
    Pipeline pipeline(c.schedule, modules[rank], comm, options);
    TensorList inputs, labels;
    if (dualpipe) {
      if (rank == 0) inputs = {x.narrow(0, 0, half)}, labels = {l.narrow(0, half, half)};
      if (rank == c.ranks - 1) inputs = {x.narrow(0, half, half)}, labels = {l.narrow(0, 0, half)};
    } else {
      if (sched.placement.rank_of(0, 0) == rank) inputs = {x};
      if (sched.placement.rank_of(0, num_stages - 1) == rank) labels = {l};
    }
    std::vector<at::Tensor> params;
    for (auto& m : modules[rank]) {
      for (auto& p : m->parameters()) params.push_back(p);
    }
    torch::optim::SGD optimizer(params, torch::optim::SGDOptions(0.1).momentum(0.9));
    for (int step = 0; step < kSteps; ++step) {
      optimizer.zero_grad();
      StepResult result = pipeline.step(inputs, c.microbatches, mse, labels);
      if (step == 0) {
        results[rank] = result;
        peaks[rank] = pipeline.executor().activation_peak();
      }
      if (step == 0) {
        for (std::size_t slot = 0; slot < modules[rank].size(); ++slot) {
          for (auto& p : modules[rank][slot]->named_parameters()) {
            const double d =
                cosine_distance(p.value().grad(), ref_grads[model_stage[rank][slot]][p.key()]);
            EXPECT_LT(d, 1e-12) << "rank " << rank << " slot " << slot << " " << p.key();
          }
        }
      }
      optimizer.step();
    }
    // Forward only, with the final parameters, against the reference's final parameters below.
    torch::NoGradGuard no_grad;
    inference[rank] = pipeline.step(inputs, c.microbatches, {}, {}, true);
  });
  for (int r = 0; r < c.ranks; ++r) ASSERT_EQ(errors[r], nullptr) << testing::message_of(errors[r]);

  const int per_direction = sched.microbatches_per_direction();
  auto ref_range = [&](const std::vector<at::Tensor>& v, int begin, int count) {
    return torch::stack(std::vector<at::Tensor>(v.begin() + begin, v.begin() + begin + count));
  };
  for (int r = 0; r < c.ranks; ++r) {
    EXPECT_EQ(peaks[r], simulated.ranks[r].peak_activations) << "rank " << r;
    if (dualpipe && (r == 0 || r == c.ranks - 1)) {
      const int begin = r == 0 ? per_direction : 0;
      ASSERT_TRUE(results[r].loss.defined()) << "rank " << r;
      EXPECT_TRUE(torch::equal(results[r].loss, ref_range(ref_losses, begin, per_direction)))
          << "rank " << r;
    } else if (!dualpipe && sched.placement.rank_of(0, num_stages - 1) == r) {
      ASSERT_TRUE(results[r].loss.defined());
      EXPECT_TRUE(torch::equal(results[r].loss, ref_range(ref_losses, 0, c.microbatches)));
    } else {
      EXPECT_FALSE(results[r].loss.defined()) << "rank " << r;
    }
    for (std::size_t slot = 0; slot < modules[r].size(); ++slot) {
      for (auto& p : modules[r][slot]->named_parameters()) {
        const at::Tensor& want = ref_final[model_stage[r][slot]][p.key()];
        EXPECT_TRUE(torch::allclose(p.value(), want, 1e-5, 1e-6))
            << "rank " << r << " slot " << slot << " " << p.key() << " max diff "
            << (p.value() - want).abs().max().item<double>();
      }
    }
  }
  // Forward-only outputs after training, against the reference model after its steps.
  {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> outs;
    for (const at::Tensor& xm : x.split(kMicrobatchSize)) {
      at::Tensor h = xm;
      for (int s = 0; s < num_stages; ++s) h = ref[s]->forward({}, {h})[0];
      outs.push_back(h);
    }
    for (int r = 0; r < c.ranks; ++r) {
      if (dualpipe && (r == 0 || r == c.ranks - 1)) {
        const int begin = r == 0 ? per_direction : 0;
        ASSERT_EQ(inference[r].outputs.size(), 1u);
        const at::Tensor want = torch::cat(
            std::vector<at::Tensor>(outs.begin() + begin, outs.begin() + begin + per_direction));
        EXPECT_TRUE(torch::allclose(inference[r].outputs[0], want, 1e-5, 1e-6)) << "rank " << r;
      } else if (!dualpipe && sched.placement.rank_of(0, num_stages - 1) == r) {
        ASSERT_EQ(inference[r].outputs.size(), 1u);
        EXPECT_TRUE(torch::allclose(inference[r].outputs[0], torch::cat(outs), 1e-5, 1e-6));
      }
    }
  }
}

// Every registered schedule on 2 and 4 ranks, at its smallest accepted micro-batch count and the
// first one from 2 * ranks + 1 on (DualPipe: 2R and 2R+2; interleaved 1F1B on 4 ranks: 10).
std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (int ranks : {2, 4}) {
    for (const std::string& name : schedule::schedule_names()) {
      const schedule::ScheduleFacts facts = schedule::schedule_facts(name);
      const int fewest = facts.smallest_microbatches(ranks);
      const int more = facts.smallest_microbatches(ranks, 2 * ranks + 1);
      if (fewest < 0) continue;
      cases.push_back({name, ranks, fewest});
      cases.push_back({name, ranks, more});
    }
    // Interleaved 1F1B with three stages per rank (a build option).
    cases.push_back({"interleaved-1f1b", ranks, 2 * ranks, 3});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllSchedules, PipelineEquivalenceTest, ::testing::ValuesIn(all_cases()),
                         case_name);

// Forward-only outputs equal the reference bit for bit (same parameters, no training).
TEST(PipelineInferenceTest, ForwardOnlyOutputsEqual) {
  for (const char* name : {"dualpipev", "1f1b"}) {
    const int ranks = 2, microbatches = 4;
    const auto sched = schedule::build_schedule(name, ranks, microbatches);
    torch::manual_seed(3);
    const at::Tensor x = torch::randn({microbatches * kMicrobatchSize, kSeq, testing::kHidden});
    std::vector<at::Tensor> outs;
    {
      torch::NoGradGuard no_grad;
      std::vector<std::shared_ptr<MlpStage>> ref;
      for (int s = 0; s < sched.num_stages(); ++s) ref.push_back(make_mlp_stage(s));
      for (const at::Tensor& xm : x.split(kMicrobatchSize)) {
        at::Tensor h = xm;
        for (auto& m : ref) h = m->forward({}, {h})[0];
        outs.push_back(h);
      }
    }
    std::vector<std::vector<StagePtr>> modules(ranks);
    for (int r = 0; r < ranks; ++r) {
      for (int slot = 0; slot < sched.placement.num_slots(r); ++slot) {
        modules[r].push_back(make_mlp_stage(sched.placement.stage_at(r, slot).stage));
      }
    }
    std::vector<StepResult> results(ranks);
    auto errors = testing::run_ranks(ranks, [&](int rank, CommunicatorPtr comm) {
      Pipeline pipeline(name, modules[rank], comm);
      torch::NoGradGuard no_grad;
      TensorList inputs;
      if (sched.placement.rank_of(0, 0) == rank) inputs = {x};
      results[rank] = pipeline.step(inputs, microbatches);
    });
    for (auto& e : errors) ASSERT_EQ(e, nullptr) << testing::message_of(e);
    const int last = sched.placement.rank_of(0, sched.num_stages() - 1);
    ASSERT_EQ(results[last].outputs.size(), 1u) << name;
    EXPECT_TRUE(torch::equal(results[last].outputs[0], torch::cat(outs))) << name;
    EXPECT_FALSE(results[last].loss.defined());
  }
}

}  // namespace
}  // namespace dualpipe::runtime

// A whole DualPipe / DualPipeV step over PP=2 x EP=2 (4 ranks as threads) on the MoE model
// against a single-process reference step with the dense model (all experts in one process).

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dualpipe/moe/moe_stage.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/schedule/registry.h"
#include "rank_threads.h"
#include "small_config.h"

namespace dualpipe::moe {
namespace {

using runtime::TensorList;

constexpr int kPp = 2;
constexpr int kEp = 2;
constexpr int kMicrobatchSize = 2;
constexpr int kSeq = 5;
// NOTE: with EP the experts multiply rows of both pipelines in one matmul and the expert
// gradients add the pipelines' contributions in another order, so losses are compared within
// kLossTolerance (not bitwise) and gradients by cosine distance < kCosineTolerance.
constexpr double kLossTolerance = 1e-6;
constexpr double kCosineTolerance = 1e-10;

double cosine_distance(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble).reshape(-1), y = b.to(at::kDouble).reshape(-1);
  const double denom = (x.norm() * y.norm()).item<double>();
  if (denom == 0) return x.equal(y) ? 0.0 : 1.0;
  return 1.0 - x.dot(y).item<double>() / denom;
}

struct Case {
  std::string schedule;
  int microbatches;
};

class MoEPipelineTest : public ::testing::TestWithParam<Case> {};

TEST_P(MoEPipelineTest, MatchesSingleProcessReference) {
  const Case c = GetParam();
  const schedule::Schedule sched = schedule::build_schedule(c.schedule, kPp, c.microbatches);
  const int num_stages = sched.num_stages();
  const bool dualpipe = c.schedule == "dualpipe";
  ModelConfig config = testing::small_config(13);
  runtime::Criterion criterion = language_model_criterion(kMicrobatchSize * kSeq);
  auto stage_options = [&](int s, int ep_rank, int ep_size) {
    return StageOptions{1, s == 0, s == num_stages - 1, ep_rank, ep_size};
  };

  at::manual_seed(11);
  std::vector<std::shared_ptr<MoEStage>> dense;
  for (int s = 0; s < num_stages; ++s) {
    dense.push_back(std::make_shared<MoEStage>(config, stage_options(s, 0, 1)));
  }
  const int64_t batch = c.microbatches * kMicrobatchSize;
  std::vector<at::Tensor> x, l;  // per pipeline (= EP rank)
  for (int p = 0; p < kEp; ++p) {
    x.push_back(at::randint(config.vocab_size, {batch, kSeq}, at::kLong));
    l.push_back(at::randint(config.vocab_size, {batch, kSeq}, at::kLong));
  }

  // Reference: per pipeline, every micro-batch through the dense stages in turn.
  std::vector<std::vector<at::Tensor>> ref_losses(kEp);
  std::vector<std::vector<std::map<std::string, at::Tensor>>> ref_grads(
      kEp, std::vector<std::map<std::string, at::Tensor>>(num_stages));
  for (int p = 0; p < kEp; ++p) {
    for (auto& d : dense) d->zero_grad();
    auto xs = x[p].split(kMicrobatchSize), ls = l[p].split(kMicrobatchSize);
    for (int m = 0; m < c.microbatches; ++m) {
      TensorList h = {xs[m]};
      for (int s = 0; s < num_stages; ++s) h = dense[s]->forward_reference(h);
      at::Tensor loss = criterion(h, {ls[m]});
      loss.backward();
      ref_losses[p].push_back(loss.detach());
    }
    for (int s = 0; s < num_stages; ++s) {
      for (auto& item : dense[s]->named_parameters()) {
        ref_grads[p][s][item.key()] = item.value().grad().clone();
      }
    }
  }

  std::mutex mutex;
  int checked_losses = 0, checked_grads = 0, overlapped = 0, comm_under_fb = 0, bitwise_losses = 0;
  testing::run_grid({kPp, kEp, 1}, [&](runtime::ProcessGrid& grid) {
    const int rank = grid.pp_rank(), p = grid.ep_rank();
    CommStreamOptions stream_options;
    stream_options.trace = true;
    auto stream = std::make_shared<CommStream>(grid.ep_group(), stream_options);
    std::vector<runtime::StagePtr> modules;
    std::vector<int> model_stage;
    for (int slot = 0; slot < sched.placement.num_slots(rank); ++slot) {
      const int s = sched.placement.stage_at(rank, slot).stage;
      auto stage = std::make_shared<MoEStage>(config, stage_options(s, p, kEp), stream);
      stage->copy_from_dense(*dense[s]);
      modules.push_back(stage);
      model_stage.push_back(s);
    }
    runtime::PipelineOptions pipeline_options;
    pipeline_options.trace = true;
    runtime::Pipeline pipeline(c.schedule, modules, grid.pipeline_group(), pipeline_options);
    const int64_t half = batch / 2;
    TensorList inputs, labels;
    if (dualpipe) {
      if (rank == 0) inputs = {x[p].narrow(0, 0, half)}, labels = {l[p].narrow(0, half, half)};
      if (rank == kPp - 1)
        inputs = {x[p].narrow(0, half, half)}, labels = {l[p].narrow(0, 0, half)};
    } else {
      if (sched.placement.rank_of(0, 0) == rank) inputs = {x[p]};
      if (sched.placement.rank_of(0, num_stages - 1) == rank) labels = {l[p]};
    }
    runtime::StepResult result = pipeline.step(inputs, c.microbatches, criterion, labels);

    if (result.loss.defined()) {
      const int per_direction = sched.microbatches_per_direction();
      const int begin = dualpipe && rank == 0 ? per_direction : 0;
      const auto& want = ref_losses[p];
      at::Tensor expected = at::stack(std::vector<at::Tensor>(
          want.begin() + begin, want.begin() + begin + result.loss.numel()));
      EXPECT_LT((result.loss - expected).abs().max().item<double>(), kLossTolerance)
          << "rank " << rank << " pipeline " << p << ": " << result.loss << " vs " << expected;
      std::lock_guard<std::mutex> lock(mutex);
      ++checked_losses;
      bitwise_losses += result.loss.equal(expected);
    }
    // The communication track: all-to-alls that ran inside an FB op of the executor's trace.
    int under = 0;
    for (const runtime::TraceEvent& op : pipeline.executor().trace().events()) {
      if (op.name.rfind("FB ", 0) != 0) continue;
      for (const runtime::TraceEvent& a2a : stream->trace_events()) {
        if (a2a.category == std::string("comm") && a2a.start_us >= op.start_us &&
            a2a.start_us + a2a.duration_us <= op.start_us + op.duration_us) {
          ++under;
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto& m : modules) overlapped += static_cast<MoEStage&>(*m).num_overlapped();
      comm_under_fb += under;
    }
    const int64_t local = config.num_experts / kEp;
    for (size_t slot = 0; slot < modules.size(); ++slot) {
      for (auto& item : modules[slot]->named_parameters()) {
        const std::string& name = item.key();
        at::Tensor want;
        const auto pos = name.find("experts.");
        if (pos != std::string::npos) {
          // Expert weights live on one EP rank and see both pipelines' tokens.
          const size_t start = pos + 8, end = name.find('.', start);
          const int64_t e = p * local + std::stoll(name.substr(start, end - start));
          const std::string dense_name =
              name.substr(0, start) + std::to_string(e) + name.substr(end);
          for (int q = 0; q < kEp; ++q) {
            const at::Tensor& g = ref_grads[q][model_stage[slot]].at(dense_name);
            if (g.defined()) want = want.defined() ? want + g : g;
          }
        } else {
          want = ref_grads[p][model_stage[slot]].at(name);
        }
        const at::Tensor& got = item.value().grad();
        ASSERT_EQ(got.defined(), want.defined()) << "rank " << rank << " " << name;
        if (!got.defined()) continue;
        EXPECT_LT(cosine_distance(got, want), kCosineTolerance)
            << "rank " << rank << " pipeline " << p << " slot " << slot << " " << name;
        std::lock_guard<std::mutex> lock(mutex);
        ++checked_grads;
      }
    }
  });
  EXPECT_EQ(checked_losses, dualpipe ? 2 * kEp : kEp);
  EXPECT_GT(checked_grads, 0);
  // The schedules have FB ops, and the executor ran each of them, on every EP pipeline, through
  // the MoE overlap hook exactly once.
  int fb_ops = 0;
  for (const schedule::Program& program : sched.programs) {
    for (const schedule::Op& op : program) fb_ops += op.kind == schedule::OpKind::kForwardBackward;
  }
  EXPECT_GT(fb_ops, 0);
  EXPECT_EQ(overlapped, kEp * fb_ops);
  EXPECT_GT(comm_under_fb, 0);
  std::printf("%s: %d FB hook calls, %d all-to-alls inside FB ops, %d/%d losses bitwise equal\n",
              c.schedule.c_str(), overlapped, comm_under_fb, bitwise_losses, checked_losses);
}

INSTANTIATE_TEST_SUITE_P(Schedules, MoEPipelineTest,
                         ::testing::Values(Case{"dualpipe", 4}, Case{"dualpipe", 6},
                                           Case{"dualpipev", 4}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.schedule + "_mb" +
                                  std::to_string(info.param.microbatches);
                         });

}  // namespace
}  // namespace dualpipe::moe

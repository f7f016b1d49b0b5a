// The runtime carries whatever dtypes the stages use: an fp64 model, and a stage output mixing an
// fp32 activation with an int64 index tensor (no gradient flows back for it), through every
// schedule. Receive buffers, mirror-gradient and data-parallel buffers take the dtype of what
// they hold; losses equal a single-process loop over the whole model bit for bit.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "dualpipe/runtime/linear.h"
#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/schedule/registry.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

constexpr int kHidden = 8;
constexpr int kIndexRange = 5;

// Stage s: h' = tanh(fc(h) + offset[index]); index' = (index + 1) % kIndexRange. Inputs and
// outputs are {h, index}; `dtype` is the activation's and the parameters' dtype.
class IndexedStage : public StageModule {
 public:
  IndexedStage(int stage, at::ScalarType dtype) {
    torch::manual_seed(700 + stage);
    fc_ = register_module("fc", Linear(kHidden, kHidden));
    offset_ = register_parameter("offset", 0.1 * torch::randn({kIndexRange, kHidden}));
    to(dtype);
  }
  TensorList forward(const MicrobatchId&, const TensorList& inputs) override {
    const at::Tensor& index = inputs.at(1);
    EXPECT_EQ(index.scalar_type(), at::kLong);
    return {torch::tanh(fc_(inputs.at(0)) + offset_.index_select(0, index)),
            (index + 1).remainder(kIndexRange)};
  }

 private:
  Linear fc_{nullptr};
  at::Tensor offset_;
};

using testing::mse;

using Case = std::tuple<std::string, int, at::ScalarType>;

class DtypeTest : public ::testing::TestWithParam<Case> {};

TEST_P(DtypeTest, EverySchedulePassesTheStagesDtypesAndMatchesTheReference) {
  const auto [schedule, ranks, dtype] = GetParam();
  const schedule::ScheduleFacts facts = schedule::schedule_facts(schedule);
  int microbatches = std::max(2, facts.min_microbatches_per_rank * ranks);
  microbatches += microbatches % facts.microbatch_multiple;
  ASSERT_TRUE(facts.accepts(ranks, microbatches));
  constexpr int kRows = 3;
  torch::manual_seed(11);
  const at::Tensor x = torch::randn({microbatches * kRows, kHidden}).to(dtype);
  const at::Tensor index = torch::randint(kIndexRange, {microbatches * kRows}, at::kLong);
  const at::Tensor y = torch::randn({microbatches * kRows, kHidden}).to(dtype);
  const schedule::Placement placement = schedule::schedule_placement(schedule, ranks);
  const int num_stages = placement.num_stages();

  // Reference: each micro-batch through the whole model; gradients summed over micro-batches.
  std::vector<std::shared_ptr<IndexedStage>> ref;
  for (int s = 0; s < num_stages; ++s) ref.push_back(std::make_shared<IndexedStage>(s, dtype));
  std::vector<at::Tensor> ref_losses;
  for (int m = 0; m < microbatches; ++m) {
    TensorList h = {x.narrow(0, m * kRows, kRows), index.narrow(0, m * kRows, kRows)};
    for (auto& stage : ref) h = stage->forward({}, h);
    at::Tensor loss = mse(h, {y.narrow(0, m * kRows, kRows)});
    loss.backward();
    ref_losses.push_back(loss.detach());
  }

  std::vector<std::vector<StagePtr>> modules(ranks);
  for (int rank = 0; rank < ranks; ++rank) {
    for (const schedule::StageId& id : Pipeline::stages_for(schedule, ranks, rank)) {
      modules[rank].push_back(std::make_shared<IndexedStage>(id.stage, dtype));
    }
  }
  std::vector<at::Tensor> losses(ranks);
  std::vector<std::vector<int>> loss_microbatches(ranks);
  auto errors = testing::run_ranks(ranks, [&](int rank, CommunicatorPtr comm) {
    Pipeline pipeline(schedule, modules[rank], comm);
    const LocalBatch batch = local_batch(schedule, ranks, rank, microbatches, {x, index}, {y});
    losses[rank] = pipeline.step(batch.inputs, microbatches, mse, batch.labels).loss;
    loss_microbatches[rank] = batch.loss_microbatches;
  });
  for (auto& e : errors) ASSERT_EQ(e, nullptr) << testing::message_of(e);

  int compared = 0;
  for (int rank = 0; rank < ranks; ++rank) {
    if (loss_microbatches[rank].empty()) continue;
    ASSERT_EQ(losses[rank].scalar_type(), dtype);
    for (std::size_t i = 0; i < loss_microbatches[rank].size(); ++i) {
      EXPECT_TRUE(torch::equal(losses[rank][i], ref_losses[loss_microbatches[rank][i]]))
          << "micro-batch " << loss_microbatches[rank][i] << ": " << losses[rank][i].item<double>()
          << " vs " << ref_losses[loss_microbatches[rank][i]].item<double>();
      ++compared;
    }
    // Every copy of a stage holds the whole batch's gradients (DualPipe sums its two copies), in
    // the parameters' dtype.
    for (std::size_t slot = 0; slot < modules[rank].size(); ++slot) {
      const int stage = Pipeline::stages_for(schedule, ranks, rank)[slot].stage;
      auto theirs = ref[stage]->named_parameters();
      for (auto& p : modules[rank][slot]->named_parameters()) {
        const at::Tensor& grad = p.value().grad();
        ASSERT_TRUE(grad.defined()) << p.key();
        EXPECT_EQ(grad.scalar_type(), dtype) << p.key();
        const double tolerance = dtype == at::kDouble ? 1e-12 : 1e-5;
        EXPECT_TRUE(torch::allclose(grad, theirs[p.key()].grad(), tolerance, tolerance))
            << "rank " << rank << " stage " << stage << " " << p.key();
      }
    }
  }
  EXPECT_EQ(compared, microbatches);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const std::string& name : schedule::schedule_names()) {
    for (int ranks : {2, 4}) {
      for (at::ScalarType dtype : {at::kDouble, at::kFloat}) cases.emplace_back(name, ranks, dtype);
    }
  }
  return cases;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = std::get<0>(info.param);
  std::replace(name.begin(), name.end(), '-', '_');  // gtest names: no '-'
  return name + "_" + std::to_string(std::get<1>(info.param)) + "ranks_" +
         (std::get<2>(info.param) == at::kDouble ? "fp64" : "fp32");
}

INSTANTIATE_TEST_SUITE_P(Schedules, DtypeTest, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
}  // namespace dualpipe::runtime

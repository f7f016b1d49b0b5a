// A schedule file runs on the executor (issue 13): PyTorch 2.13's own programs
// (tests/data/pytorch-csv) and schedules `dualpipe plan --save` searched for given costs
// (tests/data/plans), read by schedule::read_schedule_file like every schedule file, run
// through Pipeline's loaded-schedule constructor and give the per-micro-batch losses of a
// single-process reference bit for bit and its gradients within cosine distance 1e-12 (after
// summing DualPipe-placement copies). ZBV (ZBVZeroBubble) and interleaved 1F1B are PyTorch
// orders read under our families' names.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/schedule/schedule_file.h"
#include "mlp_stage.h"
#include "mse_criterion.h"
#include "test_ranks.h"

namespace dualpipe::runtime {
namespace {

using testing::make_mlp_stage;
using testing::mse;

constexpr int kMicrobatchSize = 2;
constexpr int kSeq = 4;

double cosine_distance(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble).reshape(-1), y = b.to(at::kDouble).reshape(-1);
  const double denom = (x.norm() * y.norm()).item<double>();
  if (denom == 0) return x.equal(y) ? 0.0 : 1.0;
  return 1.0 - (x.dot(y)).item<double>() / denom;
}

class LoadedScheduleTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(LoadedScheduleTest, FileRunsAndMatchesTheReference) {
  const auto& [file, family] = GetParam();
  const schedule::Schedule loaded = schedule::read_schedule_file(
      std::string(DUALPIPE_SOURCE_DIR) + "/tests/data/" + file, family);
  const int ranks = loaded.num_ranks(), stages = loaded.num_stages();
  const int microbatches = loaded.num_microbatches;
  torch::manual_seed(11);
  const at::Tensor x = torch::randn({microbatches * kMicrobatchSize, kSeq, testing::kHidden});
  const at::Tensor l = torch::randn({microbatches * kMicrobatchSize, kSeq, testing::kHidden});

  // Reference: every micro-batch through all stages in turn, one process.
  std::vector<std::shared_ptr<testing::MlpStage>> ref;
  for (int s = 0; s < stages; ++s) ref.push_back(make_mlp_stage(s));
  std::vector<at::Tensor> ref_losses;
  const auto xs = x.split(kMicrobatchSize), ls = l.split(kMicrobatchSize);
  for (int m = 0; m < microbatches; ++m) {
    at::Tensor h = xs[m];
    for (int s = 0; s < stages; ++s) h = ref[s]->forward({}, {h})[0];
    at::Tensor loss = mse({h}, {ls[m]});
    loss.backward();
    ref_losses.push_back(loss.detach());
  }

  std::vector<std::vector<StagePtr>> modules(ranks);
  std::vector<std::vector<int>> stage_of(ranks);
  for (int r = 0; r < ranks; ++r) {
    for (int slot = 0; slot < loaded.placement.num_slots(r); ++slot) {
      const int s = loaded.placement.stage_at(r, slot).stage;
      modules[r].push_back(make_mlp_stage(s));
      stage_of[r].push_back(s);
    }
  }
  std::vector<at::Tensor> losses(ranks);
  std::vector<std::vector<int>> loss_microbatches(ranks);
  auto errors = testing::run_ranks(ranks, [&](int rank, CommunicatorPtr comm) {
    Pipeline pipeline(loaded, modules[rank], comm);
    const LocalBatch batch = local_batch(loaded.placement, rank, microbatches, {x}, {l});
    losses[rank] = pipeline.step(batch.inputs, microbatches, mse, batch.labels).loss;
    loss_microbatches[rank] = batch.loss_microbatches;
    pipeline.sync_mirror_gradients();  // DualPipe's placement: the two copies' sum
    for (std::size_t slot = 0; slot < modules[rank].size(); ++slot) {
      const auto reference = ref[stage_of[rank][slot]]->named_parameters();
      for (auto& p : modules[rank][slot]->named_parameters()) {
        EXPECT_LT(cosine_distance(p.value().grad(), reference[p.key()].grad()), 1e-12)
            << "rank " << rank << " stage " << stage_of[rank][slot] << " " << p.key();
      }
    }
    // A loaded schedule is one size: another micro-batch count is refused before communicating.
    EXPECT_THROW(pipeline.step(batch.inputs, microbatches + 1, mse, batch.labels),
                 std::invalid_argument);
  });
  for (int r = 0; r < ranks; ++r) ASSERT_EQ(errors[r], nullptr) << testing::message_of(errors[r]);
  int seen = 0;
  for (int r = 0; r < ranks; ++r) {
    if (loss_microbatches[r].empty()) continue;
    ASSERT_TRUE(losses[r].defined()) << "rank " << r;
    ASSERT_EQ(losses[r].size(0), static_cast<int64_t>(loss_microbatches[r].size()));
    for (std::size_t i = 0; i < loss_microbatches[r].size(); ++i, ++seen) {
      const int m = loss_microbatches[r][i];
      EXPECT_TRUE(losses[r][i].equal(ref_losses[m])) << file << " micro-batch " << m;
    }
  }
  EXPECT_EQ(seen, microbatches);
}

// NOTE: names without '-' or '.', as gtest wants.
std::string file_case_name(
    const ::testing::TestParamInfo<std::tuple<std::string, std::string>>& info) {
  std::string name = std::get<0>(info.param);
  name = name.substr(name.find('/') + 1);
  name = name.substr(0, name.find('.'));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    PytorchFiles, LoadedScheduleTest,
    ::testing::Values(std::make_tuple("pytorch-csv/DualPipeV_pp2_c4.csv", ""),
                      std::make_tuple("pytorch-csv/GPipe_pp3_c5.csv", ""),
                      std::make_tuple("pytorch-csv/ZBVZeroBubble_pp2_c4.csv", "dualpipev"),
                      std::make_tuple("pytorch-csv/Interleaved1F1B_pp2_c4.csv", "gpipe")),
    file_case_name);

// `dualpipe plan --save` files (tests/data/plans/README.md says how each was made).
INSTANTIATE_TEST_SUITE_P(PlanFiles, LoadedScheduleTest,
                         ::testing::Values(std::make_tuple("plans/search-dual_pp4_c8.json", ""),
                                           std::make_tuple("plans/search-v_pp2_c6.csv", "search-v"),
                                           std::make_tuple("plans/search_pp3_c5.txt", "")),
                         file_case_name);

TEST(LoadedSchedule, WrongRankCountIsRefused) {
  const schedule::Schedule loaded = schedule::read_schedule_file(
      std::string(DUALPIPE_SOURCE_DIR) + "/tests/data/pytorch-csv/GPipe_pp3_c5.csv");
  auto errors = testing::run_ranks(2, [&](int rank, CommunicatorPtr comm) {
    EXPECT_THROW(Pipeline(loaded, {make_mlp_stage(rank)}, comm), std::invalid_argument);
  });
  for (const auto& e : errors) EXPECT_EQ(e, nullptr) << testing::message_of(e);
}

}  // namespace
}  // namespace dualpipe::runtime

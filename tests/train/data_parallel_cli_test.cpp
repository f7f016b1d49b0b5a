// End-to-end tests of `dualpipe train --dp N [--zero 0|1]`: the real binary and real local ranks
// over Gloo, on a model small enough for 8 ranks on 2 cores.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli_process.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/metrics.h"
#include "dualpipe/train/reference.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;
using testing::children_of;
using testing::fresh_dir;
using testing::read_text;
using testing::spawn;
using testing::with;

// The model of train_cli_test's kSmall on PP=2, micro-batches of 4 sequences (2 per replica at
// --dp 2).
const std::vector<std::string> kSmall = {
    "train", "--ranks",         "2",    "--layers",          "4", "--hidden",
    "32",    "--heads",         "2",    "--experts",         "4", "--top-k",
    "2",     "--microbatches",  "4",    "--microbatch-size", "4", "--seq-len",
    "32",    "--eval-interval", "1000", "--eval-windows",    "8", "--warmup",
    "2"};

TrainConfig small_config(int ep, int steps, const std::string& schedule = "dualpipe") {
  // NOTE: the launcher runs every rank with OMP_NUM_THREADS=1; the in-process reference must be
  // single-threaded too (see train_cli_test.cpp).
  at::set_num_threads(1);
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
  TrainConfig c;
  c.schedule = schedule;
  c.num_ranks = 2;
  c.ep = ep;
  c.num_layers = 4;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.num_experts = 4;
  c.top_k = 2;
  c.num_microbatches = 4;
  c.microbatch_size = 4;
  c.seq_len = 32;
  c.warmup_steps = 2;
  c.steps = steps;
  return c;
}

int run(const std::vector<std::string>& args, const fs::path& log) {
  int status = 0;
  ::waitpid(spawn(args, log), &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<double> losses_of(const fs::path& run_dir) {
  std::vector<double> out;
  for (const StepMetrics& m : read_metrics(run_dir.string())) out.push_back(m.loss);
  return out;
}

// The model tensors of every rank file of the latest checkpoint, by rank.
std::vector<NamedTensors> weights_of(const fs::path& run_dir) {
  std::vector<NamedTensors> ranks;
  for (const std::string& file : read_latest_checkpoint(run_dir.string()).files) {
    NamedTensors weights;
    for (auto& [name, tensor] : load_tensors((run_dir / file).string())) {
      if (name.rfind("opt.", 0) != 0 && name.rfind("eplb.", 0) != 0) weights[name] = tensor;
    }
    ranks.push_back(weights);
  }
  return ranks;
}

// NOTE on the tolerance: a replica's loss of a micro-batch is the sum of its half of the
// sequences' token losses (float32) / the global token count; the reference sums all of them at
// once, and the DP (and EP) gradient sums add the same terms in another grouping. So the runs
// agree to float32 rounding, compounded over a few AdamW steps, not bit for bit.
constexpr double kRelativeTolerance = 1e-6;  // measured: 1e-8 to 3.3e-8

void expect_close_to_reference(const std::vector<double>& got, const ReferenceResult& reference) {
  ASSERT_EQ(got.size(), reference.losses.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - reference.losses[i]) / std::abs(reference.losses[i]));
    EXPECT_NEAR(got[i], reference.losses[i], kRelativeTolerance * std::abs(reference.losses[i]))
        << "step " << i + 1;
  }
  std::cout << "losses within " << worst << " (relative) of the reference\n";
}

void expect_same_weights(const std::vector<NamedTensors>& a, const std::vector<NamedTensors>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t r = 0; r < a.size(); ++r) {
    ASSERT_EQ(a[r].size(), b[r].size()) << "rank " << r;
    for (const auto& [name, tensor] : a[r]) {
      ASSERT_TRUE(b[r].count(name)) << name;
      EXPECT_TRUE(at::equal(tensor, b[r].at(name))) << "rank " << r << " " << name;
    }
  }
}

// PP=2 x DP=2: the losses of the single-process reference on the whole global batch, ZeRO-1
// and replicated optimiser state give the same losses and weights bit for bit (the same
// allreduce, the same element-wise AdamW), and a resume with another --zero or --dp reshards.
TEST(DataParallelCli, Pp2Dp2MatchesTheReferenceAndZeroMatchesReplicated) {
  const fs::path zero = fresh_dir("dp2_zero"), replicated = fresh_dir("dp2_replicated");
  const std::vector<std::string> args = with(kSmall, {"--dp", "2", "--steps", "4"});
  ASSERT_EQ(run(with(args, {"--run-dir", zero.string()}), zero.string() + ".log"), 0)
      << read_text(zero.string() + ".log");
  ASSERT_EQ(run(with(args, {"--zero", "0", "--run-dir", replicated.string()}),
                replicated.string() + ".log"),
            0)
      << read_text(replicated.string() + ".log");
  const std::string log = read_text(zero.string() + ".log");
  EXPECT_NE(log.find("PP=2 x EP=1 x DP=2, ZeRO-1"), std::string::npos) << log;
  EXPECT_NE(log.find("PP2xEP1xDP2 ZeRO-1 opt"), std::string::npos) << log;

  const ReferenceResult reference = train_reference(small_config(1, 4));
  expect_close_to_reference(losses_of(zero), reference);
  EXPECT_EQ(losses_of(zero), losses_of(replicated));
  expect_same_weights(weights_of(zero), weights_of(replicated));

  // The summary's measured optimiser state: each ZeRO-1 rank holds half of a replicated one's.
  const auto bytes = [](const fs::path& dir) {
    return nlohmann::json::parse(read_text(dir / "summary.json"))
        .at("optimizer_state_bytes_per_rank")
        .get<std::vector<double>>();
  };
  const std::vector<double> sharded = bytes(zero), whole = bytes(replicated);
  ASSERT_EQ(sharded.size(), 4u);
  for (std::size_t r = 0; r < 4; ++r) EXPECT_NEAR(sharded[r] / whole[r], 0.5, 1e-3) << r;

  // Resuming reshards. ZeRO-1 -> replicated state at DP=2 continues bit for bit like the
  // replicated run (the same arithmetic from the same state); DP=2 -> DP=1 to float32 rounding
  // (the DP sum is gone).
  const std::vector<std::string> more = {"--steps", "6"};
  const fs::path to_replicated = fresh_dir("dp2_to_replicated"), to_dp1 = fresh_dir("dp2_to_dp1");
  fs::copy(zero, to_replicated, fs::copy_options::recursive);
  fs::copy(zero, to_dp1, fs::copy_options::recursive);
  ASSERT_EQ(
      run(with({"train", "--resume", replicated.string()}, more), replicated.string() + ".log2"), 0)
      << read_text(replicated.string() + ".log2");
  ASSERT_EQ(run(with({"train", "--resume", to_replicated.string(), "--zero", "0"}, more),
                to_replicated.string() + ".log2"),
            0)
      << read_text(to_replicated.string() + ".log2");
  const std::string log2 = read_text(to_replicated.string() + ".log2");
  EXPECT_NE(log2.find("resharding the optimiser state of the checkpoint from PP=2 x EP=1 x DP=2, "
                      "ZeRO-1"),
            std::string::npos)
      << log2;
  EXPECT_EQ(losses_of(to_replicated), losses_of(replicated));
  expect_same_weights(weights_of(to_replicated), weights_of(replicated));
  ASSERT_EQ(run(with({"train", "--resume", to_dp1.string(), "--dp", "1"}, more),
                to_dp1.string() + ".log2"),
            0)
      << read_text(to_dp1.string() + ".log2");
  const std::vector<double> want = losses_of(replicated), got = losses_of(to_dp1);
  ASSERT_EQ(got.size(), 6u);
  for (std::size_t i = 4; i < 6; ++i) {
    EXPECT_NEAR(got[i], want[i], kRelativeTolerance * want[i]) << "step " << i + 1;
  }
  EXPECT_EQ(read_latest_checkpoint(to_dp1.string()).files.size(), 2u);
  fs::remove_all(to_replicated);
  fs::remove_all(to_dp1);
  fs::remove_all(zero);
  fs::remove_all(replicated);
}

// PP=2 x EP=2 x DP=2 (8 ranks) with EPLB rebalancing every 2 steps (which moves sharded AdamW
// moments with the experts): the reference's losses on the whole global batch, and ZeRO-1 and
// replicated state bit for bit equal.
TEST(DataParallelCli, Pp2Ep2Dp2WithEplbMatchesTheReference) {
  const fs::path zero = fresh_dir("ep2dp2_zero"), replicated = fresh_dir("ep2dp2_replicated");
  const std::vector<std::string> args =
      with(kSmall, {"--ep", "2", "--dp", "2", "--steps", "4", "--eplb-interval", "2"});
  ASSERT_EQ(run(with(args, {"--run-dir", zero.string()}), zero.string() + ".log"), 0)
      << read_text(zero.string() + ".log");
  ASSERT_EQ(run(with(args, {"--zero", "0", "--run-dir", replicated.string()}),
                replicated.string() + ".log"),
            0)
      << read_text(replicated.string() + ".log");
  EXPECT_NE(read_text(zero.string() + ".log").find("EPLB rebalanced"), std::string::npos);
  const ReferenceResult reference = train_reference(small_config(2, 4));
  expect_close_to_reference(losses_of(zero), reference);
  EXPECT_EQ(losses_of(zero), losses_of(replicated));
  expect_same_weights(weights_of(zero), weights_of(replicated));
  EXPECT_EQ(read_latest_checkpoint(zero.string()).layout.at("dp"), 2);
  const std::vector<std::vector<int>> trivial(4, {0, 1, 2, 3});
  EXPECT_NE(read_latest_checkpoint(zero.string()).expert_placement, trivial)
      << "no rebalance moved an expert (and its sharded moments); the test shows less";
  fs::remove_all(zero);
  fs::remove_all(replicated);
}

// A PP=2 x DP=2 ZeRO-1 run killed with SIGKILL (launcher and ranks) after a checkpoint and
// resumed continues bit for bit like an uninterrupted run (see train_cli_test's
// SigkillThenResumeIsBitIdentical for why every run warms up over all its steps).
TEST(DataParallelCli, SigkillThenResumeIsBitIdentical) {
  const int steps = 12;
  std::vector<std::string> config = with(kSmall, {"--dp", "2", "--checkpoint-interval", "2"});
  for (std::size_t i = 0; i + 1 < config.size(); ++i) {
    if (config[i] == "--warmup") config[i + 1] = std::to_string(steps);
  }
  const fs::path whole = fresh_dir("dp_whole");
  ASSERT_EQ(run(with(config, {"--steps", std::to_string(steps), "--run-dir", whole.string()}),
                whole.string() + ".log"),
            0)
      << read_text(whole.string() + ".log");
  const std::vector<double> expected = losses_of(whole);

  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  const fs::path killed = fresh_dir("dp_killed");
  const pid_t launcher = spawn(with(config, {"--steps", "100000", "--run-dir", killed.string()}),
                               killed.string() + ".log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!has_checkpoint(killed.string()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::vector<pid_t> ranks = children_of(launcher);
  ::kill(launcher, SIGKILL);
  ::waitpid(launcher, nullptr, 0);
  for (pid_t r : ranks) ::kill(r, SIGKILL);
  for (pid_t r : ranks) ::waitpid(r, nullptr, 0);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  EXPECT_EQ(ranks.size(), 4u);
  ASSERT_TRUE(has_checkpoint(killed.string())) << read_text(killed.string() + ".log");
  const int checkpoint_step = read_latest_checkpoint(killed.string()).step;
  ASSERT_LT(checkpoint_step, steps);

  ASSERT_EQ(run(with(config, {"--resume", killed.string(), "--steps", std::to_string(steps)}),
                killed.string() + ".log2"),
            0)
      << read_text(killed.string() + ".log2");
  const std::vector<double> resumed = losses_of(killed);
  ASSERT_EQ(resumed.size(), static_cast<std::size_t>(steps));
  for (int s = checkpoint_step; s < steps; ++s) {
    EXPECT_EQ(resumed[s], expected[s])
        << "step " << s + 1 << " (checkpoint at " << checkpoint_step << ")";
  }
  expect_same_weights(weights_of(killed), weights_of(whole));
  fs::remove_all(whole);
  fs::remove_all(killed);
}

// Every schedule of the registry trains at PP=2 x DP=2 with ZeRO-1 to the reference's losses.
class DataParallelSchedules : public ::testing::TestWithParam<std::string> {};

TEST_P(DataParallelSchedules, Pp2Dp2MatchesTheReference) {
  const fs::path dir = fresh_dir("dp2_" + GetParam());
  ASSERT_EQ(run(with(kSmall, {"--schedule", GetParam(), "--dp", "2", "--steps", "2", "--run-dir",
                              dir.string()}),
                dir.string() + ".log"),
            0)
      << read_text(dir.string() + ".log");
  expect_close_to_reference(losses_of(dir), train_reference(small_config(1, 2, GetParam())));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(EverySchedule, DataParallelSchedules,
                         ::testing::ValuesIn(schedule::schedule_names()));

}  // namespace
}  // namespace dualpipe::train

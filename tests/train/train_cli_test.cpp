// End-to-end tests of `dualpipe train` / `dualpipe generate`: the real binary, real local ranks
// over Gloo, real signals.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

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

// A small model that trains a step in well under a second on 2 cores.
const std::vector<std::string> kSmall = {
    "train", "--layers",          "4", "--hidden",  "32", "--heads",
    "2",     "--experts",         "4", "--top-k",   "2",  "--microbatches",
    "8",     "--microbatch-size", "2", "--seq-len", "32", "--eval-interval",
    "1000",  "--eval-windows",    "8", "--warmup",  "2"};

// `args` with the value of `flag` set to `value` (replaced in place, or appended).
std::vector<std::string> with_value(std::vector<std::string> args, const std::string& flag,
                                    const std::string& value) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == flag) {
      args[i + 1] = value;
      return args;
    }
  }
  return with(args, {flag, value});
}

// waitpid's status word in words, for assertion messages.
std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status word " + std::to_string(status);
}

bool killed_by(int status, int sig) {
  return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run(const std::vector<std::string>& args, const fs::path& log) {
  return wait_exit(spawn(args, log));
}

std::vector<double> losses_of(const fs::path& run_dir) {
  std::vector<double> out;
  for (const StepMetrics& m : read_metrics(run_dir.string())) out.push_back(m.loss);
  return out;
}

// NOTE: the launcher runs every rank with OMP_NUM_THREADS=1, and the thread count changes the
// order of additions inside LibTorch's and OpenBLAS's kernels, so the in-process reference must
// run single-threaded too. OpenBLAS reads OMP_NUM_THREADS only when it is loaded; its setter is
// looked up at run time because another BLAS may back LibTorch.
void single_threaded() {
  at::set_num_threads(1);
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
}

TrainConfig small_config(const std::string& schedule, int steps) {
  single_threaded();
  TrainConfig c;
  c.schedule = schedule;
  c.num_layers = 4;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.num_experts = 4;
  c.top_k = 2;
  c.num_microbatches = 8;
  c.microbatch_size = 2;
  c.seq_len = 32;
  c.warmup_steps = 2;
  c.steps = steps;
  return c;
}

// DualPipe on 4 ranks vs the single-process reference: losses bit for bit, parameters within
// 1e-6 (in practice equal: same arithmetic in the same order, see reference.h).
TEST(TrainCli, DualPipeMatchesSingleProcessReference) {
  const fs::path dir = fresh_dir("reference");
  ASSERT_EQ(run(with(kSmall, {"--steps", "4", "--run-dir", dir.string()}), dir.string() + ".log"),
            0)
      << read_text(dir.string() + ".log");
  const std::vector<double> pipelined = losses_of(dir);
  const ReferenceResult reference = train_reference(small_config("dualpipe", 4));
  ASSERT_EQ(pipelined.size(), 4u);
  for (std::size_t i = 0; i < pipelined.size(); ++i) {
    EXPECT_EQ(pipelined[i], reference.losses[i]) << "step " << i + 1;
  }
  const Manifest m = read_latest_checkpoint(dir.string());
  double max_diff = 0.0;
  int compared = 0;
  std::map<std::string, int> copies;  // parameter name -> rank files holding it
  for (const std::string& file : m.files) {
    for (const auto& [name, tensor] : load_tensors((dir / file).string())) {
      if (name.rfind("opt.", 0) == 0 || name.rfind("eplb.", 0) == 0) continue;
      ASSERT_TRUE(reference.parameters.count(name)) << name;
      max_diff =
          std::max(max_diff, (tensor - reference.parameters.at(name)).abs().max().item<double>());
      ++compared;
      ++copies[name];
    }
  }
  // Every parameter of the model is in the checkpoint, twice: DualPipe keeps a copy of every
  // stage for each direction, on two ranks.
  EXPECT_EQ(copies.size(), reference.parameters.size());
  for (const auto& [name, count] : copies) EXPECT_EQ(count, 2) << name;
  EXPECT_LE(max_diff, 1e-6);
  std::cout << "compared " << compared << " tensors, max |difference| " << max_diff << "\n";

  // generate: loads every stage in one process and continues the prompt.
  const fs::path gen_log = dir.string() + ".gen";
  ASSERT_EQ(run({"generate", "--run", dir.string(), "--prompt", "Hello", "--bytes", "16"}, gen_log),
            0)
      << read_text(gen_log);
  EXPECT_NE(read_text(gen_log).find("Hello"), std::string::npos);
  fs::remove_all(dir);
}

TEST(TrainCli, OneF1BMatchesSingleProcessReference) {
  const fs::path dir = fresh_dir("reference_1f1b");
  ASSERT_EQ(run(with(kSmall, {"--schedule", "1f1b", "--steps", "3", "--run-dir", dir.string()}),
                dir.string() + ".log"),
            0)
      << read_text(dir.string() + ".log");
  const std::vector<double> pipelined = losses_of(dir);
  const ReferenceResult reference = train_reference(small_config("1f1b", 3));
  ASSERT_EQ(pipelined.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(pipelined[i], reference.losses[i]) << i;
  fs::remove_all(dir);
}

// While alive, makes this process the reaper of its orphaned descendants: the ranks of a
// launcher killed here become children of the test, which can then wait for them.
struct ChildSubreaper {
  ChildSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
  ~ChildSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

// SIGKILLs and reaps the child processes it holds that were not waited for yet, so that a failed
// assertion leaves no long run behind.
struct KillOnExit {
  std::vector<pid_t> pids;
  void forget(pid_t pid) { pids.erase(std::remove(pids.begin(), pids.end(), pid), pids.end()); }
  ~KillOnExit() {
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
  }
};

// A run killed with SIGKILL (launcher and every rank) after a checkpoint and then resumed gives,
// from the checkpoint on, the same losses bit for bit as an uninterrupted run.
//
// NOTE: the killed run is given far more steps than it can train before the kill, so it can never
// finish first. The learning rate depends on the total step count only after the warm-up, so
// every run here warms up over all `steps` steps: the killed run's first `steps` steps then do the
// same arithmetic as the uninterrupted run's, and the resumed run (told --steps `steps`) goes on
// exactly like it.
TEST(TrainCli, SigkillThenResumeIsBitIdentical) {
  const int steps = 24;
  const int killed_steps = 100000;  // hours of training: the kill always lands mid-run
  const std::vector<std::string> config =
      with_value(with(kSmall, {"--checkpoint-interval", "3"}), "--warmup", std::to_string(steps));
  const fs::path whole = fresh_dir("whole");
  ASSERT_EQ(run(with(config, {"--steps", std::to_string(steps), "--run-dir", whole.string()}),
                whole.string() + ".log"),
            0)
      << read_text(whole.string() + ".log");
  const std::vector<double> expected = losses_of(whole);
  ASSERT_EQ(expected.size(), static_cast<std::size_t>(steps));

  const ChildSubreaper subreaper;
  const fs::path killed = fresh_dir("killed");
  const std::string killed_log = killed.string() + ".log";
  KillOnExit cleanup;
  const pid_t launcher =
      spawn(with(config, {"--steps", std::to_string(killed_steps), "--run-dir", killed.string()}),
            killed_log);
  cleanup.pids.push_back(launcher);
  // Poll for the first checkpoint (bounded; stop early if the run ends on its own).
  int status = 0;
  pid_t ended = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!has_checkpoint(killed.string()) && std::chrono::steady_clock::now() < deadline) {
    ended = ::waitpid(launcher, &status, WNOHANG);
    if (ended == launcher) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (ended == launcher) {
    cleanup.forget(launcher);
    FAIL() << "the run " << describe_status(status) << " before it was killed\n"
           << read_text(killed_log);
  }
  const std::vector<pid_t> ranks = children_of(launcher);
  cleanup.pids.insert(cleanup.pids.end(), ranks.begin(), ranks.end());
  // The launcher first: its ranks are then this process's children (see ChildSubreaper), so
  // each one's end can be waited for and checked below.
  ::kill(launcher, SIGKILL);
  ASSERT_EQ(::waitpid(launcher, &status, 0), launcher) << std::strerror(errno);
  cleanup.forget(launcher);
  EXPECT_TRUE(killed_by(status, SIGKILL)) << "launcher " << describe_status(status);
  for (pid_t r : ranks) ::kill(r, SIGKILL);
  EXPECT_EQ(ranks.size(), 4u);
  for (pid_t r : ranks) {
    const pid_t reaped = ::waitpid(r, &status, 0);
    cleanup.forget(r);
    ASSERT_EQ(reaped, r) << "rank pid " << r << ": " << std::strerror(errno);
    EXPECT_TRUE(killed_by(status, SIGKILL)) << "rank pid " << r << " " << describe_status(status);
  }
  ASSERT_TRUE(has_checkpoint(killed.string())) << "no checkpoint within 120 s of the start\n"
                                               << read_text(killed_log);
  const int checkpoint_step = read_latest_checkpoint(killed.string()).step;
  ASSERT_LT(checkpoint_step, steps) << "the kill landed only after step " << steps
                                    << ", the last one the uninterrupted run has to compare with";

  ASSERT_EQ(run(with(config, {"--resume", killed.string(), "--steps", std::to_string(steps)}),
                killed.string() + ".log2"),
            0)
      << read_text(killed.string() + ".log2");
  EXPECT_NE(read_text(killed.string() + ".log2").find("resuming from the checkpoint of step"),
            std::string::npos);
  const std::vector<double> resumed = losses_of(killed);
  ASSERT_EQ(resumed.size(), static_cast<std::size_t>(steps));
  for (int s = checkpoint_step; s < steps; ++s) {
    EXPECT_EQ(resumed[s], expected[s])
        << "step " << s + 1 << " (checkpoint at " << checkpoint_step << ")";
  }
  std::cout << "killed after the checkpoint of step " << checkpoint_step << "; steps "
            << checkpoint_step + 1 << ".." << steps << " identical\n";
  fs::remove_all(whole);
  fs::remove_all(killed);
}

TEST(TrainCli, InterruptStopsAllRanksWithACheckpoint) {
  const fs::path dir = fresh_dir("interrupt");
  const pid_t launcher = spawn(
      with(kSmall, {"--steps", "1000", "--checkpoint-interval", "1000", "--run-dir", dir.string()}),
      dir.string() + ".log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_metrics(dir.string()).size() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(launcher, SIGINT);
  // The launcher reports an interrupted job as 128 + SIGINT, like a shell; the ranks exit 0.
  EXPECT_EQ(wait_exit(launcher), 128 + SIGINT) << read_text(dir.string() + ".log");
  const std::string log = read_text(dir.string() + ".log");
  EXPECT_NE(log.find("stopped at step"), std::string::npos) << log;
  const int last = read_metrics(dir.string()).back().step;
  EXPECT_GE(last, 3);  // SIGINT was sent once 3 steps were in the metrics
  EXPECT_LT(last, 1000);
  EXPECT_EQ(read_latest_checkpoint(dir.string()).step, last);
  fs::remove_all(dir);
}

// A loss turning NaN at step 5 (made so by a StepHook in tests/train/train_worker.cpp, which
// runs train_rank as `dualpipe train`'s ranks do) stops every rank before the update: the
// message names the step and micro-batch, the step-3 checkpoint stays the latest, and the ranks
// exit 3, which the launcher passes on.
TEST(TrainCli, NonFiniteLossStopsNamingStepAndMicrobatch) {
  const fs::path dir = fresh_dir("nan");
  TrainConfig config = small_config("dualpipe", 10);  // the model and batch of kSmall
  config.eval_interval = 1000;
  config.eval_windows = 8;
  config.checkpoint_interval = 3;
  config.run_dir = dir.string();
  const fs::path config_file = dir.string() + ".json";
  std::ofstream(config_file) << to_json(config).dump(2) << "\n";
  const int code = run({"launch", "-n", std::to_string(config.num_ranks), "--",
                        DUALPIPE_TRAIN_WORKER_PATH, config_file.string(), "5"},
                       dir.string() + ".log");
  const std::string log = read_text(dir.string() + ".log");
  EXPECT_EQ(code, 3) << log;
  EXPECT_NE(log.find("at step 5, micro-batch"), std::string::npos) << log;
  EXPECT_EQ(read_latest_checkpoint(dir.string()).step, 3);
  EXPECT_EQ(read_metrics(dir.string()).back().step, 4);
  fs::remove_all(dir);
  fs::remove(config_file);
}

TEST(TrainCli, BadOptionsAreUserErrors) {
  const fs::path dir = fresh_dir("bad");
  fs::create_directories(dir);
  EXPECT_EQ(run({"train", "--layers", "6", "--run-dir", dir.string()}, dir / "log"), 1);
  EXPECT_NE(read_text(dir / "log").find("num_layers=6"), std::string::npos);
  EXPECT_EQ(run({"train", "--resume", (dir / "nothing").string()}, dir / "log"), 1);
  EXPECT_EQ(run({"generate", "--run", (dir / "nothing").string()}, dir / "log"), 1);
  fs::remove_all(dir);
}

// EPLB: 2 pipeline ranks x 2 EP ranks, a rebalance every 2 steps.
const std::vector<std::string> kExpertParallel = with(kSmall, {"--ranks", "2", "--ep", "2"});

std::vector<std::vector<int>> placement_of(const fs::path& run_dir) {
  return read_latest_checkpoint(run_dir.string()).expert_placement;
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Without redundant experts a rebalance permutes experts over slots and EP ranks; every expert
// still sees the same rows in the same order, so the losses continue bit for bit.
TEST(TrainCli, EplbRebalanceMidRunKeepsTheLossesExact) {
  const fs::path plain = fresh_dir("eplb_plain"), balanced = fresh_dir("eplb_balanced");
  ASSERT_EQ(run(with(kExpertParallel, {"--steps", "6", "--run-dir", plain.string()}),
                plain.string() + ".log"),
            0)
      << read_text(plain.string() + ".log");
  ASSERT_EQ(run(with(kExpertParallel,
                     {"--steps", "6", "--eplb-interval", "2", "--run-dir", balanced.string()}),
                balanced.string() + ".log"),
            0)
      << read_text(balanced.string() + ".log");
  const std::string log = read_text(balanced.string() + ".log");
  EXPECT_EQ(count_of(log, "EPLB rebalanced"), 3) << log;
  const std::vector<std::vector<int>> trivial(4, {0, 1, 2, 3});
  EXPECT_EQ(placement_of(plain), trivial);
  const std::vector<std::vector<int>> placed = placement_of(balanced);
  ASSERT_EQ(placed.size(), 4u);
  EXPECT_NE(placed, trivial) << "no rebalance moved an expert; the test shows nothing";
  const std::vector<double> want = losses_of(plain), got = losses_of(balanced);
  ASSERT_EQ(got.size(), 6u);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "step " << i + 1;
  fs::remove_all(plain);
  fs::remove_all(balanced);
}

// With 2 redundant experts (6 slots over 2 EP ranks) hot experts get replicas: the losses stay
// within fp32 rounding of the plain run, and a run resumed from a checkpoint taken between two
// rebalances (placement and token window restored) continues bit for bit.
TEST(TrainCli, EplbWithReplicasStaysCloseAndResumesExactly) {
  const fs::path plain = fresh_dir("eplb_replicas_plain"), whole = fresh_dir("eplb_replicas");
  const std::vector<std::string> replicas =
      with(kExpertParallel, {"--redundant-experts", "2", "--eplb-interval", "2",
                             "--checkpoint-interval", "3", "--steps", "6"});
  ASSERT_EQ(run(with(kExpertParallel, {"--steps", "6", "--run-dir", plain.string()}),
                plain.string() + ".log"),
            0)
      << read_text(plain.string() + ".log");
  ASSERT_EQ(run(with(replicas, {"--run-dir", whole.string()}), whole.string() + ".log"), 0)
      << read_text(whole.string() + ".log");
  const std::vector<double> want = losses_of(plain), got = losses_of(whole);
  ASSERT_EQ(got.size(), 6u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-4 * std::abs(want[i])) << "step " << i + 1;
  }
  const nlohmann::json summary = nlohmann::json::parse(read_text(whole / "summary.json"));
  EXPECT_EQ(summary.at("eplb").at("rebalances"), 3);
  const std::vector<std::vector<int>> placed = placement_of(whole);
  ASSERT_EQ(placed.size(), 4u);
  for (const auto& layer : placed) EXPECT_EQ(layer.size(), 6u);

  // Resume a copy from its step-3 checkpoint: one rebalance behind it, one token window open.
  const fs::path resumed = fresh_dir("eplb_replicas_resumed");
  fs::copy(whole, resumed, fs::copy_options::recursive);
  fs::copy_file(resumed / "checkpoints/step-000003/manifest.json", resumed / "checkpoint.json",
                fs::copy_options::overwrite_existing);
  ASSERT_EQ(read_latest_checkpoint(resumed.string()).step, 3);
  ASSERT_EQ(run(with(kExpertParallel, {"--resume", resumed.string()}), resumed.string() + ".log"),
            0)
      << read_text(resumed.string() + ".log");
  const std::vector<double> continued = losses_of(resumed);
  ASSERT_EQ(continued.size(), 6u);
  for (std::size_t i = 3; i < 6; ++i) EXPECT_EQ(continued[i], got[i]) << "step " << i + 1;
  EXPECT_EQ(placement_of(resumed), placed);
  fs::remove_all(plain);
  fs::remove_all(whole);
  fs::remove_all(resumed);
}

// The default job (`dualpipe train`, no options) learns: its final held-out loss is far below the
// unigram loss. About 1.5-3 minutes on 2 cores, so it runs only with DUALPIPE_LONG_TESTS=1.
TEST(TrainCli, DefaultRunBeatsTheUnigramLoss) {
  if (!std::getenv("DUALPIPE_LONG_TESTS")) GTEST_SKIP() << "set DUALPIPE_LONG_TESTS=1 to run";
  const fs::path dir = fresh_dir("default");
  ASSERT_EQ(run({"train", "--run-dir", dir.string()}, dir.string() + ".log"), 0)
      << read_text(dir.string() + ".log");
  const nlohmann::json summary = nlohmann::json::parse(read_text(dir / "summary.json"));
  const double unigram = summary.at("unigram_loss").get<double>();
  const double held_out = summary.at("held_out_loss_end").get<double>();
  std::cout << "held-out " << held_out << " vs unigram " << unigram << "\n";
  EXPECT_LT(held_out, unigram - 0.5);
  for (const char* file : {"loss_curve.svg", "timeline.svg", "trace.json", "metrics.csv"}) {
    EXPECT_TRUE(fs::exists(dir / file)) << file;
  }
  fs::remove_all(dir);
}

// Every schedule `train --help` lists runs on the defaults (before: dualpipev stopped with
// "num_layers must be a positive multiple of the 8 pipeline stages").
class TrainDefaults : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainDefaults, OneStepRunsOnTheDefaults) {
  const fs::path dir = fresh_dir("defaults_" + GetParam());
  fs::create_directories(dir);
  EXPECT_EQ(run({"train", "--schedule", GetParam(), "--steps", "1", "--run-dir", dir.string()},
                dir / "log"),
            0)
      << read_text(dir / "log");
  EXPECT_TRUE(fs::exists(dir / "metrics.csv")) << read_text(dir / "log");
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(EverySchedule, TrainDefaults,
                         ::testing::ValuesIn(schedule::schedule_names()), [](const auto& info) {
                           // gtest names may not start with a digit nor hold a '-'
                           std::string name = "s_" + info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TrainCli, HelpListsEveryScheduleOfTheRegistry) {
  const fs::path dir = fresh_dir("help");
  fs::create_directories(dir);
  ASSERT_EQ(run({"train", "--help"}, dir / "log"), 0);
  for (const std::string& name : schedule::schedule_names()) {
    EXPECT_NE(read_text(dir / "log").find(name), std::string::npos) << name;
  }
  fs::remove_all(dir);
}

// Before: --seq-len 20000 tried 12.8 GB per rank; --seed -1 became 2^64-1; --data /dev/zero
// was read forever.
TEST(TrainCli, UnboundedInputsAreRefusedNamingTheValue) {
  const fs::path dir = fresh_dir("bounds");
  fs::create_directories(dir);
  const std::string run_dir = (dir / "run").string();
  EXPECT_EQ(run({"train", "--seq-len", "20000", "--run-dir", run_dir}, dir / "log"), 1);
  EXPECT_NE(read_text(dir / "log").find("seq_len=20000"), std::string::npos)
      << read_text(dir / "log");
  EXPECT_NE(read_text(dir / "log").find("would fit"), std::string::npos);
  EXPECT_NE(run({"train", "--seed", "-1", "--run-dir", run_dir}, dir / "log"), 0);
  EXPECT_NE(read_text(dir / "log").find("expected an integer in [0, 18446744073709551615]"),
            std::string::npos)
      << read_text(dir / "log");
  EXPECT_NE(run({"train", "--layers", "64.5", "--run-dir", run_dir}, dir / "log"), 0);
  EXPECT_NE(read_text(dir / "log").find("got '64.5'"), std::string::npos);
  EXPECT_NE(
      run(with(kSmall, {"--data", "/dev/zero", "--steps", "1", "--run-dir", run_dir}), dir / "log"),
      0);
  EXPECT_NE(read_text(dir / "log").find("/dev/zero is not a regular file"), std::string::npos)
      << read_text(dir / "log");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dualpipe::train

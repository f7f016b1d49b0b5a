// `dualpipe train`: trains the byte-level MoE decoder with a pipeline schedule on local ranks.
// Without a launcher around it, it re-executes itself as num_ranks * ep * dp local ranks
// (runtime::launch_local); each rank then runs train::train_rank.
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.h"
#include "dualpipe/runtime/distributed_env.h"
#include "dualpipe/runtime/launcher.h"
#include "dualpipe/runtime/rendezvous.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/memory_estimate.h"
#include "dualpipe/train/run_lock.h"
#include "dualpipe/train/train_config.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe::cli {
namespace {

// NOTE: a signal handler can only reach static storage; this flag is the one mutable global,
// written by the handler and read by the training loop at step boundaries.
volatile std::sig_atomic_t g_stop_requested = 0;

extern "C" void request_stop(int) {
  g_stop_requested = 1;
}

// This process's arguments after the program name (Linux: /proc/self/cmdline).
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  if (!args.empty()) args.erase(args.begin());
  return args;
}

// Set by the launching process for the ranks it starts: it holds the run folder's lock for them.
constexpr const char* kRunFolderLockedEnv = "DUALPIPE_RUN_FOLDER_LOCKED";

struct TrainOptions {
  train::TrainConfig cli;  // values as given on the command line
  std::string config_file;
  std::string resume_dir;
  // Communication timeout of the ranks in seconds (0: DUALPIPE_TIMEOUT, else the default).
  double timeout_s = 0;
  // Setters applied over the file/checkpoint config for options given explicitly.
  std::vector<std::pair<CLI::Option*, std::function<void(train::TrainConfig&)>>> overrides;
};

// NOTE: an alias, because clang-format 14 and 19 space `T Class::*name` differently.
template <typename T>
using ConfigField = T train::TrainConfig::*;

template <typename T>
void add(CLI::App* sub, TrainOptions& o, const std::string& flags, ConfigField<T> field,
         const std::string& help) {
  CLI::Option* opt = sub->add_option(flags, o.cli.*field, help)->capture_default_str();
  if constexpr (std::is_integral_v<T>) opt->check(integer_in_range<T>());
  TrainOptions* self = &o;
  o.overrides.emplace_back(opt,
                           [self, field](train::TrainConfig& c) { c.*field = self->cli.*field; });
}

// NOTE: the default num_layers depends on the schedule and the ranks (dualpipev cuts 4 ranks
// into 8 stages); this marks it unset until a file, a checkpoint or --layers sets it.
constexpr int kLayersUnset = std::numeric_limits<int>::min();

train::TrainConfig resolve_config(const TrainOptions& o) {
  train::TrainConfig config;
  config.num_layers = kLayersUnset;
  if (!o.config_file.empty()) config = train::load_config_file(o.config_file, config);
  if (!o.resume_dir.empty()) {
    nlohmann::json saved = train::read_latest_checkpoint(o.resume_dir).config;
    saved.erase("initial_held_out_loss");
    config = train::config_from_json(saved, config);
    config.run_dir = o.resume_dir;
  }
  for (const auto& [opt, set] : o.overrides) {
    if (opt->count() > 0) set(config);
  }
  if (!o.resume_dir.empty()) config.run_dir = o.resume_dir;
  if (config.num_layers == kLayersUnset) config.num_layers = train::default_num_layers(config);
  config.validate();
  return config;
}

int run_rank(const TrainOptions& o) {
  const train::TrainConfig config = resolve_config(o);
  struct sigaction action = {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  runtime::DistributedEnv env = runtime::detect_distributed_env(runtime::current_environment());
  if (o.timeout_s > 0) {
    env.timeout = std::chrono::milliseconds(static_cast<long long>(o.timeout_s * 1000));
  }
  runtime::DistributedContext context = runtime::init_distributed(env);
  train::RunControl control;
  control.resume = !o.resume_dir.empty();
  control.stop_requested = &g_stop_requested;
  control.out = &std::cout;
  const train::RunResult result = train::train_rank(config, context, control);
  return result.outcome == train::RunOutcome::kNonFinite ? 3 : 0;
}

// --timeout, else DUALPIPE_TIMEOUT of this process (checked as the ranks will read it), else 0.
double job_timeout_s(const TrainOptions& o) {
  if (o.timeout_s > 0) return o.timeout_s;
  const auto timeout = runtime::detect_distributed_env(runtime::current_environment()).timeout;
  return timeout ? static_cast<double>(timeout->count()) / 1000 : 0;
}

// Starts the job's ranks (or, for one rank, runs it here) while this process holds the run
// folder's lock. Temporary files left by a killed job are removed first, and those of this job's
// failed writes after it failed: no process of the job writes then.
int launch_job(const TrainOptions& o) {
  // NOTE: the config is checked first, so a bad command line creates no run folder.
  const train::TrainConfig config = resolve_config(o);
  train::check_memory_fits(config, train::available_memory_bytes());
  const std::string& run_dir = config.run_dir;
  const train::RunFolderLock lock(run_dir);
  train::remove_temporary_files(run_dir);
  if (!o.resume_dir.empty()) {
    if (!train::has_checkpoint(o.resume_dir)) {
      throw std::invalid_argument("--resume " + o.resume_dir + ": no checkpoint there");
    }
    train::verify_checkpoint_files(o.resume_dir, train::read_latest_checkpoint(o.resume_dir),
                                   std::cerr);
  }
  const int world = config.world_size();
  int code = 1;
  try {
    if (world == 1) {
      code = run_rank(o);
    } else {
      runtime::LaunchOptions launch;
      launch.num_ranks = world;
      // NOTE: on Ctrl-C the ranks finish their step and write a checkpoint before exiting;
      // the launcher must not SIGKILL them meanwhile. After a rank failed no step can finish,
      // so the others get the launcher's short grace (a stopped rank must not hold the job).
      launch.interrupt_grace_period = std::chrono::milliseconds(120000);
      launch.timeout_s = job_timeout_s(o);
      launch.command = {"/proc/self/exe"};
      for (const std::string& arg : own_arguments()) launch.command.push_back(arg);
      launch.extra_env.emplace_back(kRunFolderLockedEnv, lock.path());
      std::cout << "dualpipe train: starting " << world << " local ranks\n" << std::flush;
      code = runtime::launch_local(launch);
    }
  } catch (...) {
    train::remove_temporary_files(run_dir);
    throw;
  }
  if (code != 0) train::remove_temporary_files(run_dir);
  return code;
}

}  // namespace

Command add_train_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "train",
      "Train a byte-level MoE language model with DualPipe (or another schedule) on local ranks; "
      "writes metrics, pictures, a trace and checkpoints into the run folder");
  auto o = std::make_shared<TrainOptions>();
  sub->add_option("--config", o->config_file,
                  "JSON (or .toml) file with any of the options below (by their config names, e.g. "
                  "\"hidden_size\"); the command line overrides it");
  sub->add_option("--resume", o->resume_dir,
                  "Continue the run in this folder from its latest checkpoint");
  sub->add_option("--timeout", o->timeout_s,
                  "Seconds a rank waits for a peer before failing (default: DUALPIPE_TIMEOUT, "
                  "else 60)")
      ->check(CLI::PositiveNumber);
  std::string names;
  for (const std::string& name : schedule::schedule_names()) {
    names += (names.empty() ? "" : ", ") + name;
  }
  add(sub, *o, "--schedule", &train::TrainConfig::schedule, "Pipeline schedule: " + names);
  add(sub, *o, "--ranks,--num-ranks", &train::TrainConfig::num_ranks, "Pipeline ranks");
  add(sub, *o, "--stages-per-rank", &train::TrainConfig::stages_per_rank,
      "Stages per rank for the schedules that take it (interleaved-1f1b; default 2); 0: the "
      "schedule's own");
  add(sub, *o, "--ep", &train::TrainConfig::ep, "Expert-parallel ranks per pipeline rank");
  add(sub, *o, "--dp", &train::TrainConfig::dp,
      "Data-parallel pipeline replicas, each taking microbatch-size/dp sequences of every "
      "micro-batch");
  add(sub, *o, "--zero", &train::TrainConfig::zero,
      "1: ZeRO-1, the AdamW moments sharded over the DP replicas; 0: replicated (no effect at "
      "--dp 1)");
  add(sub, *o, "--layers", &train::TrainConfig::num_layers,
      "Decoder layers, a multiple of the number of stages (default: 4, or the smallest multiple "
      "of the stages above it, e.g. 8 for dualpipev on 4 ranks)");
  add(sub, *o, "--hidden", &train::TrainConfig::hidden_size, "Hidden size");
  add(sub, *o, "--heads", &train::TrainConfig::num_heads, "Attention heads");
  add(sub, *o, "--experts", &train::TrainConfig::num_experts, "Routed experts per layer");
  add(sub, *o, "--top-k", &train::TrainConfig::top_k, "Experts per token");
  add(sub, *o, "--redundant-experts", &train::TrainConfig::redundant_experts,
      "Extra physical expert slots per layer for replicas of hot experts (EPLB); experts + "
      "redundant must be a multiple of --ep");
  add(sub, *o, "--eplb-interval", &train::TrainConfig::eplb_interval,
      "Rebalance the expert placement (EPLB) every N steps from the tokens counted per expert "
      "since the last rebalance; 0: never");
  add(sub, *o, "--microbatches", &train::TrainConfig::num_microbatches,
      "Micro-batches per step (DualPipe: half per direction, at least 2 x ranks)");
  add(sub, *o, "--microbatch-size", &train::TrainConfig::microbatch_size,
      "Sequences per micro-batch");
  add(sub, *o, "--seq-len", &train::TrainConfig::seq_len, "Bytes per sequence");
  add(sub, *o, "--steps", &train::TrainConfig::steps, "Optimiser steps (in total, when resuming)");
  add(sub, *o, "--lr", &train::TrainConfig::learning_rate, "Peak learning rate (AdamW)");
  add(sub, *o, "--warmup", &train::TrainConfig::warmup_steps, "Linear warm-up steps");
  add(sub, *o, "--weight-decay", &train::TrainConfig::weight_decay, "AdamW weight decay");
  add(sub, *o, "--seed", &train::TrainConfig::seed, "Seed of the weights and the data order");
  add(sub, *o, "--checkpoint-interval", &train::TrainConfig::checkpoint_interval,
      "Steps between checkpoints (one is also written at the end)");
  add(sub, *o, "--eval-interval", &train::TrainConfig::eval_interval,
      "Steps between held-out evaluations");
  add(sub, *o, "--eval-windows", &train::TrainConfig::eval_windows,
      "Held-out sequences per evaluation");
  add(sub, *o, "--run-dir", &train::TrainConfig::run_dir, "Run folder");
  add(sub, *o, "--data", &train::TrainConfig::data,
      "Text file or folder of text files (default: the fortunes corpus)");
  return {sub, [o] {
            const runtime::DistributedEnv env =
                runtime::detect_distributed_env(runtime::current_environment());
            const bool launched = env.world_size > 1 || env.launcher == "dualpipe launch";
            if (!launched) return launch_job(*o);
            if (std::getenv(kRunFolderLockedEnv) != nullptr) return run_rank(*o);
            // Ranks started by another launcher (torchrun, mpirun, `dualpipe launch`): world
            // rank 0 holds the lock for its life; a second job's rank 0 fails before rendezvous.
            std::optional<train::RunFolderLock> lock;
            if (env.rank == 0) {
              const std::string run_dir = resolve_config(*o).run_dir;
              lock.emplace(run_dir);
              train::remove_temporary_files(run_dir);
            }
            return run_rank(*o);
          }};
}

}  // namespace dualpipe::cli

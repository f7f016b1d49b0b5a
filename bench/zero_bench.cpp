// ZeRO-1 against replicated optimiser state on the same grid: `dualpipe train --dp N --zero 1`
// and `--zero 0`, run alternately (rounds x each), the optimiser-state bytes every rank measured
// in its own process (summary.json, from the AdamW moment tensors it holds) side by side, and the
// median step time of each (metrics.csv, the first steps left out as warm-up).
//
//   dualpipe_zero_bench [--dualpipe build/bin/dualpipe] [--ranks 2] [--dp 4] [--steps 20]
//                       [--rounds 2] [--dir /tmp/dualpipe-zero-bench]

#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dualpipe/train/metrics.h"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string dualpipe = DUALPIPE_CLI_PATH;
  int ranks = 2;
  int dp = 4;
  int steps = 20;
  int rounds = 2;
  std::string dir = "/tmp/dualpipe-zero-bench";
};

struct RunNumbers {
  std::vector<double> state_bytes;  // per world rank
  std::vector<double> step_seconds;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

RunNumbers train(const Options& o, int zero, int round) {
  const fs::path run_dir = fs::path(o.dir) / fmt::format("zero{}-round{}", zero, round);
  fs::remove_all(run_dir);
  const std::string command = fmt::format(
      "OMP_NUM_THREADS=1 '{}' train --ranks {} --dp {} --zero {} --steps {} --eval-interval 1000 "
      "--checkpoint-interval 100000 --run-dir '{}' > '{}.log' 2>&1",
      o.dualpipe, o.ranks, o.dp, zero, o.steps, run_dir.string(), run_dir.string());
  if (std::system(command.c_str()) != 0) {
    throw std::runtime_error("failed: " + command + "; see " + run_dir.string() + ".log");
  }
  std::ifstream in(run_dir / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(in);
  RunNumbers numbers;
  numbers.state_bytes = summary.at("optimizer_state_bytes_per_rank").get<std::vector<double>>();
  const std::vector<dualpipe::train::StepMetrics> rows =
      dualpipe::train::read_metrics(run_dir.string());
  for (std::size_t i = std::min<std::size_t>(3, rows.size() / 2); i < rows.size(); ++i) {
    numbers.step_seconds.push_back(rows[i].step_seconds);
  }
  return numbers;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app("ZeRO-1 vs replicated optimiser state in dualpipe train");
  app.add_option("--dualpipe", o.dualpipe, "The dualpipe binary");
  app.add_option("--ranks", o.ranks, "Pipeline ranks");
  app.add_option("--dp", o.dp, "Data-parallel replicas");
  app.add_option("--steps", o.steps, "Steps per run");
  app.add_option("--rounds", o.rounds, "Runs of each, alternating");
  app.add_option("--dir", o.dir, "Folder for the run folders");
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(o.dir);
  RunNumbers sharded, replicated;
  for (int round = 0; round < o.rounds; ++round) {
    for (int zero : {1, 0}) {
      RunNumbers n = train(o, zero, round);
      RunNumbers& into = zero == 1 ? sharded : replicated;
      into.state_bytes = n.state_bytes;
      into.step_seconds.insert(into.step_seconds.end(), n.step_seconds.begin(),
                               n.step_seconds.end());
    }
  }
  fmt::print(
      "dualpipe train --ranks {} --dp {} (default model and batch), {} steps x {} runs each\n",
      o.ranks, o.dp, o.steps, o.rounds);
  fmt::print("{:>5} {:>18} {:>18} {:>8}\n", "rank", "ZeRO-1 bytes", "replicated bytes", "ratio");
  double worst = 0.0;
  for (std::size_t r = 0; r < sharded.state_bytes.size(); ++r) {
    const double ratio = sharded.state_bytes[r] / replicated.state_bytes[r];
    worst = std::max(worst, ratio);
    fmt::print("{:>5} {:>18.0f} {:>18.0f} {:>8.4f}\n", r, sharded.state_bytes[r],
               replicated.state_bytes[r], ratio);
  }
  const double zero_step = median(sharded.step_seconds);
  const double replicated_step = median(replicated.step_seconds);
  fmt::print("optimiser state per rank, ZeRO-1 / replicated: max {:.4f} (1/dp = {:.4f})\n", worst,
             1.0 / o.dp);
  fmt::print("median step: ZeRO-1 {:.4f} s, replicated {:.4f} s, ratio {:.3f} (target <= 1.1)\n",
             zero_step, replicated_step, zero_step / replicated_step);
  return 0;
}

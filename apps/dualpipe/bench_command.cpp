// `dualpipe bench runtime`: step time of a schedule on local ranks (threads of this process, one
// intra-op thread each, Gloo over loopback) for the reference's benchmark model, beside the
// ideal GEMM time, or with emulated compute beside the simulator's makespan.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/functional/activation.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "command.h"
#include "dualpipe/runtime/linear.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/runtime/process_group.h"
#include "dualpipe/runtime/weight_grad_store.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/schedule_file.h"
#include "dualpipe/sim/simulator.h"

extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace dualpipe::cli {
namespace {

using runtime::MicrobatchId;
using runtime::TensorList;

struct BenchOptions {
  std::string schedule = "dualpipe";
  int ranks = 2;
  int microbatches = 20;
  int mbs = 3;
  int seq = 64;
  int hidden = 256;
  int steps = 10;
  int warmup = 2;
  std::string emulate;
  std::string trace;
  std::string schedule_file;  // runs this file's schedule (e.g. `dualpipe plan --save`) instead
};

// Linear(h, 4h)-GELU-Linear(4h, h) without biases (the reference example's model) with
// deferrable weight gradients.
class MlpStage : public runtime::StageModule {
 public:
  explicit MlpStage(int hidden) {
    fc1_ = register_module(
        "fc1", runtime::Linear(torch::nn::LinearOptions(hidden, 4 * hidden).bias(false)));
    fc2_ = register_module(
        "fc2", runtime::Linear(torch::nn::LinearOptions(4 * hidden, hidden).bias(false)));
  }
  TensorList forward(const MicrobatchId&, const TensorList& inputs) override {
    return {fc2_(at::gelu(fc1_(inputs.at(0))))};
  }

 private:
  runtime::Linear fc1_{nullptr};
  runtime::Linear fc2_{nullptr};
};

// An emulated compute op: waits `ms` milliseconds. NOTE: a plain sleep wakes up 0.1-0.3 ms late
// on a loaded machine (2% of a 10 ms op, which would show up as executor overhead), so it
// sleeps until shortly before the deadline and yields for the rest.
void sleep_ms(double ms) {
  if (ms <= 0) return;
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double, std::milli>(ms));
  const auto early = deadline - std::chrono::microseconds(400);
  if (Clock::now() < early) std::this_thread::sleep_until(early);
  while (Clock::now() < deadline) std::this_thread::yield();
}

// Compute replaced by sleeps: F in forward, B (or B - W when deferred) in backward, W in the
// deferred closure; the tensors still flow (a scale by a one-element parameter).
class EmulatedStage : public runtime::StageModule {
 public:
  explicit EmulatedStage(const sim::CostModel& costs) : costs_(costs) {
    scale_ = register_parameter("scale", at::ones({1}));
  }
  TensorList forward(const MicrobatchId&, const TensorList& inputs) override {
    sleep_ms(costs_.forward);
    return {inputs.at(0) * scale_};
  }
  void backward(const MicrobatchId& id, const TensorList& outputs,
                const TensorList& grads) override {
    runtime::WeightGradStore* store = runtime::DeferWeightGradGuard::current();
    sleep_ms(store != nullptr ? costs_.backward - costs_.weight : costs_.backward);
    if (store != nullptr) {
      const double w = costs_.weight;
      store->push([w] { sleep_ms(w); });
    }
    StageModule::backward(id, outputs, grads);
  }

 private:
  sim::CostModel costs_;
  at::Tensor scale_;
};

struct RunResult {
  std::vector<double> step_s;  // max over ranks, per timed step
  schedule::Schedule schedule;
};

// The schedule a run times: the file's for the schedule asked for when --schedule-file is given
// (its name and sizes are then the file's), else the registry's build.
schedule::Schedule schedule_to_run(const BenchOptions& o, const std::string& schedule_name) {
  if (!o.schedule_file.empty() && schedule_name == o.schedule) {
    return schedule::read_schedule_file(o.schedule_file);
  }
  return schedule::build_schedule(schedule_name, o.ranks, o.microbatches);
}

RunResult run_bench(const BenchOptions& o, const std::string& schedule_name,
                    const sim::CostModel* emulate) {
  const schedule::Schedule sched = schedule_to_run(o, schedule_name);
  const int per_direction = sched.microbatches_per_direction();
  const int total_steps = o.warmup + o.steps;
  std::vector<std::vector<double>> times(total_steps, std::vector<double>(o.ranks, 0.0));
  std::vector<std::vector<runtime::TraceEvent>> traces(o.ranks);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::exception_ptr> errors(o.ranks);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < o.ranks; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        runtime::CommunicatorPtr comm = runtime::make_communicator(store, rank, o.ranks);
        std::vector<runtime::StagePtr> modules;
        for (int slot = 0; slot < sched.placement.num_slots(rank); ++slot) {
          if (emulate != nullptr) {
            modules.push_back(std::make_shared<EmulatedStage>(*emulate));
          } else {
            modules.push_back(std::make_shared<MlpStage>(o.hidden));
          }
        }
        runtime::PipelineOptions options;
        options.trace = !o.trace.empty();
        runtime::Pipeline pipeline(sched, modules, comm, options);
        const int directions_here_in =
            static_cast<int>(sched.placement.directions_starting_on(rank).size());
        const int directions_here_out =
            static_cast<int>(sched.placement.directions_ending_on(rank).size());
        TensorList inputs, labels;
        if (directions_here_in > 0) {
          inputs = {at::randn({directions_here_in * per_direction * o.mbs, o.seq, o.hidden})};
        }
        if (directions_here_out > 0) {
          labels = {at::randn({directions_here_out * per_direction * o.mbs, o.seq, o.hidden})};
        }
        runtime::Criterion mse = [](const TensorList& out, const TensorList& l) {
          return at::mse_loss(out.at(0), l.at(0));
        };
        for (int step = 0; step < total_steps; ++step) {
          for (auto& m : modules) m->zero_grad();
          comm->barrier()->wait();
          const auto start = std::chrono::steady_clock::now();
          pipeline.step(inputs, o.microbatches, mse, labels);
          times[step][rank] =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        traces[rank] = pipeline.executor().trace().events();
        comm->barrier()->wait();
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  // NOTE: the 1F1B comparison run must not overwrite the trace of the schedule asked for.
  if (!o.trace.empty() && schedule_name == o.schedule) runtime::write_chrome_trace(o.trace, traces);
  RunResult result{{}, sched};
  for (int step = o.warmup; step < total_steps; ++step) {
    result.step_s.push_back(*std::max_element(times[step].begin(), times[step].end()));
  }
  return result;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Single-thread GEMM rate (FLOP/s) on the benchmark's first-layer product.
double measure_gemm_rate(const BenchOptions& o) {
  const int64_t tokens = static_cast<int64_t>(o.mbs) * o.seq;
  const at::Tensor a = at::randn({tokens, o.hidden}), b = at::randn({o.hidden, 4 * o.hidden});
  at::Tensor c = a.mm(b);
  const int reps = 20;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) c = a.mm(b);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return reps * 2.0 * tokens * o.hidden * 4 * o.hidden / s;
}

// Step times of deepseek-ai/DualPipe's own example (examples/example_dualpipe.py: 20 chunks of
// 3 x 64 x 256, fp32, one thread per rank) measured on this project's machines, for the ratio
// printed beside ours. Data, not a branch on a schedule: only measured rows are listed.
struct ReferenceTiming {
  const char* schedule;
  int ranks;
  double step_s;
};
constexpr ReferenceTiming kReferenceTimings[] = {
    {"dualpipe", 2, 0.18},
    {"dualpipe", 4, 0.41},
    {"dualpipe", 8, 0.87},
};

// The reference's measured step time for these options, or 0 when none was measured (another
// model size or schedule).
double reference_step_s(const BenchOptions& o) {
  const BenchOptions reference_model;
  if (o.microbatches != reference_model.microbatches || o.mbs != reference_model.mbs ||
      o.seq != reference_model.seq || o.hidden != reference_model.hidden) {
    return 0;
  }
  for (const ReferenceTiming& timing : kReferenceTimings) {
    if (o.schedule == timing.schedule && o.ranks == timing.ranks) return timing.step_s;
  }
  return 0;
}

int run_runtime_bench(BenchOptions o) {
  if (!o.schedule_file.empty()) {
    const schedule::Schedule loaded = schedule::read_schedule_file(o.schedule_file);
    o.schedule = loaded.name;
    o.ranks = loaded.num_ranks();
    o.microbatches = loaded.num_microbatches;
  }
  at::set_num_threads(1);
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
  if (o.steps < 1 || o.warmup < 0) {
    throw std::invalid_argument(
        fmt::format("--steps must be >= 1 and --warmup >= 0, got {} and {}", o.steps, o.warmup));
  }
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (o.emulate.empty()) {
    const RunResult r = run_bench(o, o.schedule, nullptr);
    const double rate = measure_gemm_rate(o);
    const double tokens = static_cast<double>(o.mbs) * o.seq;
    // Forward 2 GEMMs of 2*T*h*4h FLOPs; backward twice that; every micro-batch passes every
    // stage once.
    const double flops =
        3.0 * 2 * 2 * tokens * o.hidden * 4 * o.hidden * o.microbatches * r.schedule.num_stages();
    const double ideal = flops / rate / std::min<unsigned>(cores, o.ranks);
    const double med = median(r.step_s);
    const double ref = reference_step_s(o);
    std::cout << fmt::format(
                     "{{\"schedule\":\"{}\",\"ranks\":{},\"microbatches\":{},\"steps\":{},"
                     "\"step_s_median\":{:.4f},\"step_s_min\":{:.4f},\"gemm_gflops_1core\":{:.2f},"
                     "\"cores\":{},\"ideal_s\":{:.4f},\"ratio_to_ideal\":{:.3f}{}}}",
                     o.schedule, o.ranks, o.microbatches, o.steps, med,
                     *std::min_element(r.step_s.begin(), r.step_s.end()), rate / 1e9, cores, ideal,
                     med / ideal,
                     ref > 0 ? fmt::format(",\"reference_s\":{},\"ratio_to_reference\":{:.3f}", ref,
                                           med / ref)
                             : std::string())
              << std::endl;
    return 0;
  }
  sim::CostModel costs = sim::parse_cost_model(o.emulate);
  if (o.emulate.find("FB=") == std::string::npos)
    costs.forward_backward = costs.forward + costs.backward;
  auto measure = [&](const std::string& name) {
    const RunResult r = run_bench(o, name, &costs);
    const double makespan_s = sim::simulate(r.schedule, costs).makespan / 1000.0;
    return std::make_pair(median(r.step_s), makespan_s);
  };
  const auto [measured, simulated] = measure(o.schedule);
  std::string extra;
  // NOTE: every schedule is also compared with 1F1B, the baseline the papers compare against.
  const std::string baseline = "1f1b";
  if (o.schedule != baseline) {
    const auto [measured_1f1b, simulated_1f1b] = measure(baseline);
    extra = fmt::format(
        ",\"step_s_median_1f1b\":{:.4f},\"sim_makespan_s_1f1b\":{:.4f},"
        "\"measured_ratio_to_1f1b\":{:.4f},\"sim_ratio_to_1f1b\":{:.4f}",
        measured_1f1b, simulated_1f1b, measured / measured_1f1b, simulated / simulated_1f1b);
  }
  std::cout
      << fmt::format(
             "{{\"schedule\":\"{}\",\"ranks\":{},\"microbatches\":{},\"emulate\":\"{}\","
             "\"step_s_median\":{:.4f},\"sim_makespan_s\":{:.4f},\"measured_over_sim\":{:.4f}{}}}",
             o.schedule, o.ranks, o.microbatches, sim::to_string(costs), measured, simulated,
             measured / simulated, extra)
      << std::endl;
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  CLI::App* rt =
      bench->add_subcommand("runtime", "Step time of a schedule on local ranks (one JSON line)");
  auto options = std::make_shared<BenchOptions>();
  rt->add_option("--schedule", options->schedule, "a registered schedule (dualpipe sim --list)");
  rt->add_option("--ranks", options->ranks, "pipeline ranks");
  rt->add_option("--microbatches", options->microbatches, "micro-batches per step (total)");
  rt->add_option("--mbs", options->mbs, "micro-batch size");
  rt->add_option("--seq", options->seq, "sequence length");
  rt->add_option("--hidden", options->hidden, "hidden size");
  rt->add_option("--steps", options->steps, "timed steps");
  rt->add_option("--warmup", options->warmup, "untimed steps first");
  rt->add_option("--emulate", options->emulate,
                 "replace compute by sleeps: F=..,B=..,W=..[,FB=..] in milliseconds");
  rt->add_option("--trace", options->trace, "write a Chrome trace of the last step here");
  rt->add_option("--schedule-file", options->schedule_file,
                 "run this schedule file (e.g. from `dualpipe plan --save`; JSON, text or PyTorch "
                 "CSV) instead of --schedule; its sizes replace --ranks and --microbatches");
  return {bench, [options] { return run_runtime_bench(*options); }};
}

}  // namespace dualpipe::cli

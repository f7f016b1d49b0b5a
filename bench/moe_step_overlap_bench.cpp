// A whole DualPipe step with the MoE overlap hook vs the same schedule without it, next to the
// ratio the simulator predicts for the costs measured in the same run.
//
// PP=2 x EP=2 (4 ranks as threads over Gloo). On 2 cores four ranks would fight over the CPU, so
// compute is emulated (a sleep per component, as in `dualpipe bench runtime --emulate`) and every
// token all-to-all is a real Gloo all-to-all over the EP group with an emulated network delay
// (serial_link.h, one all-to-all on the link at a time). The emulated chunk has the real block's
// structure and its overlap hook the real hook's order (moe_stage.h):
//
//   forward, per layer:  attn(F) | dispatch a2a | mlp(F) | combine a2a
//   backward, per layer: combine a2a | mlp(B) mlp(W) | dispatch a2a | attn(B) attn(W)
//   FB hook, per layer pair: combine(B) a2a under attn(F); mlp(B) under dispatch(F); mlp(W);
//                            mlp(F) under dispatch(B); attn(B) under combine(F); attn(W)
//
// W work goes to the executor's store when it defers weight gradients, as Linear's does.
// Costs F, B, W and FB are measured on one EP group of two ranks; the simulator then predicts
// the DualPipe makespan with that FB and with FB = F + B (what the executor does without a hook).
//
//   dualpipe_moe_step_overlap_bench [--microbatches 8] [--layers 2] [--unit-ms 4] [--steps 6]

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <vector>

#include "dualpipe/moe/comm_stream.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/runtime/process_grid.h"
#include "dualpipe/runtime/weight_grad_store.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/sim/simulator.h"
#include "serial_link.h"

namespace {

using dualpipe::moe::CommStream;
using dualpipe::runtime::BackwardHalf;
using dualpipe::runtime::Criterion;
using dualpipe::runtime::DeferWeightGradGuard;
using dualpipe::runtime::ForwardHalf;
using dualpipe::runtime::ForwardResult;
using dualpipe::runtime::MicrobatchId;
using dualpipe::runtime::StageModule;
using dualpipe::runtime::TensorList;
using dualpipe::runtime::WeightGradStore;

struct Options {
  int microbatches = 8;
  int layers = 2;
  double unit_ms = 4.0;  // attn(F) = mlp(F) = attn(B) = mlp(B) = attn(W) = mlp(W) = one unit
  int steps = 6;
  int warmup = 2;
  int iters = 8;
};

constexpr int kPp = 2;
constexpr int kEp = 2;

void sleep_ms(double ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One MoE chunk (`layers` blocks) with emulated compute and real, delayed all-to-alls.
class EmulatedMoEStage : public StageModule {
 public:
  EmulatedMoEStage(std::shared_ptr<CommStream> stream, int layers, double unit_ms, bool hook)
      : stream_(std::move(stream)), layers_(layers), unit_(unit_ms), hook_(hook) {
    scale_ = register_parameter("scale", at::ones({1}));
    payload_ = at::zeros({stream_->size(), 4});
    splits_.assign(stream_->size(), 1);
  }

  TensorList forward(const MicrobatchId&, const TensorList& inputs) override {
    for (int l = 0; l < layers_; ++l) {
      sleep_ms(unit_);  // attn(F)
      launch("dispatch").wait();
      sleep_ms(unit_);  // mlp(F)
      launch("combine").wait();
    }
    return {inputs.at(0) * scale_};
  }

  void backward(const MicrobatchId& id, const TensorList& outputs,
                const TensorList& grads) override {
    WeightGradStore* store = DeferWeightGradGuard::current();
    for (int l = 0; l < layers_; ++l) {
      launch("combine backward").wait();
      sleep_ms(unit_);  // mlp(B)
      weight_grad(store);
      launch("dispatch backward").wait();
      sleep_ms(unit_);  // attn(B)
      weight_grad(store);
    }
    StageModule::backward(id, outputs, grads);
  }

  bool has_overlap_hook() const override { return hook_; }

  ForwardResult overlapped_forward_backward(const ForwardHalf& forward, StageModule& other,
                                            const BackwardHalf& backward) override {
    auto& bs = dynamic_cast<EmulatedMoEStage&>(other);
    WeightGradStore* store = DeferWeightGradGuard::current();
    const int nb = bs.layers_;
    for (int i = 0; i < std::max(layers_, nb); ++i) {
      const bool f = i < layers_, b = nb - 1 - i >= 0;
      dualpipe::moe::PendingAllToAll combine_b, dispatch_f, dispatch_b, combine_f;
      if (b) combine_b = launch("combine backward");
      if (f) {
        sleep_ms(unit_);  // attn(F) under combine(B)
        dispatch_f = launch("dispatch");
      }
      if (b) {
        combine_b.wait();
        sleep_ms(bs.unit_);  // mlp(B) under dispatch(F)
        dispatch_b = launch("dispatch backward");
        bs.weight_grad(store);  // mlp(W)
      }
      if (f) {
        dispatch_f.wait();
        sleep_ms(unit_);  // mlp(F) under dispatch(B)
        combine_f = launch("combine");
      }
      if (b) {
        dispatch_b.wait();
        sleep_ms(bs.unit_);  // attn(B) under combine(F)
      }
      if (f) combine_f.wait();
      if (b) bs.weight_grad(store);  // attn(W)
    }
    ForwardResult result;
    result.outputs = {forward.inputs.at(0) * scale_};
    if (forward.criterion) result.loss = (*forward.criterion)(result.outputs, forward.labels);
    bs.StageModule::backward(backward.id, backward.outputs, backward.output_grads);
    return result;
  }

 private:
  dualpipe::moe::PendingAllToAll launch(const char* name) {
    return stream_->all_to_all(payload_, splits_, splits_, name);
  }
  void weight_grad(WeightGradStore* store) const {
    if (store == nullptr) {
      sleep_ms(unit_);
    } else {
      const double ms = unit_;
      store->push([ms] { sleep_ms(ms); });
    }
  }

  std::shared_ptr<CommStream> stream_;
  int layers_;
  double unit_;
  bool hook_;
  at::Tensor scale_;
  at::Tensor payload_;
  std::vector<int64_t> splits_;
};

dualpipe::moe::CommStreamOptions stream_options(const Options& o) {
  dualpipe::moe::CommStreamOptions options;
  // 1:1 with compute: a layer's forward computes 2 units and waits on 2 all-to-alls.
  options.link = dualpipe::bench::serial_link(
      std::chrono::microseconds(static_cast<int64_t>(std::llround(o.unit_ms * 1000))));
  return options;
}

// Runs `body(grid)` on kPp * kEp threads over one in-process store.
template <typename Body>
void run_grid(Body body) {
  const int world = kPp * kEp;
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        at::set_num_threads(1);
        dualpipe::runtime::ProcessGrid grid({kPp, kEp, 1}, rank, world);
        dualpipe::runtime::CommunicatorOptions options;
        options.timeout = std::chrono::seconds(60);
        grid.connect(store, options);
        body(grid);
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void barrier(const dualpipe::runtime::CommunicatorPtr& comm) {
  std::vector<at::Tensor> t = {at::zeros({1})};
  comm->allreduce(t)->wait();
}

// F, B (full), W and the overlapped FB (weight gradients inline) of one chunk, in ms, medians
// over o.iters on the EP group of pipeline rank 0.
dualpipe::sim::CostModel measure_costs(const Options& o) {
  std::vector<double> f, b, bz, w, fb;
  run_grid([&](dualpipe::runtime::ProcessGrid& grid) {
    if (grid.pp_rank() != 0) return;
    auto stream = std::make_shared<CommStream>(grid.ep_group(), stream_options(o));
    EmulatedMoEStage x(stream, o.layers, o.unit_ms, true), y(stream, o.layers, o.unit_ms, true);
    const MicrobatchId xid{0, 0, 0}, yid{0, 1, 0};
    auto input = [] { return at::ones({2, 4}).requires_grad_(); };
    auto time_ms = [&](auto&& fn) {
      barrier(grid.ep_group());
      const auto start = std::chrono::steady_clock::now();
      fn();
      return 1e3 * seconds_since(start);
    };
    for (int it = 0; it < o.iters; ++it) {
      TensorList out;
      const double tf = time_ms([&] { out = y.forward(yid, {input()}); });
      const double tb = time_ms([&] { y.backward(yid, out, {at::ones_like(out[0])}); });
      WeightGradStore store;
      out = y.forward(yid, {input()});
      const double tbz = time_ms([&] {
        DeferWeightGradGuard guard(&store);
        store.begin_group();
        y.backward(yid, out, {at::ones_like(out[0])});
        store.end_group();
      });
      const double tw = time_ms([&] { store.pop_and_run(); });
      out = y.forward(yid, {input()});
      const double tfb = time_ms([&] {
        x.overlapped_forward_backward(ForwardHalf{xid, {input()}, nullptr, {}}, y,
                                      BackwardHalf{yid, out, {at::ones_like(out[0])}});
      });
      if (grid.ep_rank() == 0) {
        f.push_back(tf), b.push_back(tb), bz.push_back(tbz), w.push_back(tw), fb.push_back(tfb);
      }
    }
  });
  dualpipe::sim::CostModel costs;
  costs.forward = median(f);
  costs.backward = median(b);
  // W as the deferred part actually costs: B - Bz when that is what a deferred backward saves.
  costs.weight = std::min(costs.backward, median(w));
  costs.forward_backward = median(fb);
  costs.comm = 0;
  fmt::print("  measured: F {:.2f} ms, B {:.2f} ms, B-W {:.2f} ms, W {:.2f} ms, FB {:.2f} ms\n",
             costs.forward, costs.backward, median(bz), median(w), costs.forward_backward);
  return costs;
}

// Median DualPipe step time (max over ranks) with or without the overlap hook.
double measure_steps(const Options& o, bool hook) {
  const auto sched = dualpipe::schedule::build_schedule("dualpipe", kPp, o.microbatches);
  const int per_direction = sched.microbatches_per_direction();
  const int total = o.warmup + o.steps;
  std::vector<std::vector<double>> times(total, std::vector<double>(kPp * kEp, 0.0));
  run_grid([&](dualpipe::runtime::ProcessGrid& grid) {
    auto stream = std::make_shared<CommStream>(grid.ep_group(), stream_options(o));
    const int rank = grid.pp_rank();
    std::vector<dualpipe::runtime::StagePtr> modules;
    for (int slot = 0; slot < sched.placement.num_slots(rank); ++slot) {
      modules.push_back(std::make_shared<EmulatedMoEStage>(stream, o.layers, o.unit_ms, hook));
    }
    dualpipe::runtime::Pipeline pipeline("dualpipe", modules, grid.pipeline_group());
    // DualPipe: each end feeds one direction and holds the other direction's labels.
    const TensorList inputs = {at::randn({per_direction, 4})};
    const TensorList labels = {at::randn({per_direction, 4})};
    const Criterion criterion = [](const TensorList& out, const TensorList& l) {
      return (out.at(0) * l.at(0)).sum();
    };
    for (int step = 0; step < total; ++step) {
      for (auto& m : modules) m->zero_grad(/*set_to_none=*/false);
      barrier(grid.ep_group());
      barrier(grid.pipeline_group());
      const auto start = std::chrono::steady_clock::now();
      pipeline.step(inputs, o.microbatches, criterion, labels);
      times[step][grid.rank()] = seconds_since(start);
    }
  });
  std::vector<double> steps;
  for (int s = o.warmup; s < total; ++s) {
    steps.push_back(*std::max_element(times[s].begin(), times[s].end()));
  }
  return median(steps);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"DualPipe step with vs without the MoE overlap hook, PP=2 x EP=2, emulated costs"};
  app.add_option("--microbatches", o.microbatches, "micro-batches per step (even, >= 4)");
  app.add_option("--layers", o.layers, "MoE layers per stage");
  app.add_option("--unit-ms", o.unit_ms,
                 "emulated time of one compute component and of one all-to-all");
  app.add_option("--steps", o.steps, "timed steps (median reported)");
  app.add_option("--iters", o.iters, "iterations of each cost measurement");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(1);

  fmt::print(
      "DualPipe PP={} x EP={}, {} micro-batches, {} MoE layers per stage, compute "
      "component = all-to-all = {} ms\n",
      kPp, kEp, o.microbatches, o.layers, o.unit_ms);
  dualpipe::sim::CostModel costs = measure_costs(o);
  const auto sched = dualpipe::schedule::build_schedule("dualpipe", kPp, o.microbatches);
  const double sim_overlapped = dualpipe::sim::simulate(sched, costs).makespan;
  dualpipe::sim::CostModel sequential = costs;
  sequential.forward_backward = costs.forward + costs.backward;
  const double sim_sequential = dualpipe::sim::simulate(sched, sequential).makespan;

  const double with_hook = 1e3 * measure_steps(o, true);
  const double without_hook = 1e3 * measure_steps(o, false);
  const double measured_ratio = with_hook / without_hook;
  const double predicted_ratio = sim_overlapped / sim_sequential;
  fmt::print("  step with overlap:    {:8.2f} ms   (simulated makespan {:8.2f} ms)\n", with_hook,
             sim_overlapped);
  fmt::print("  step without overlap: {:8.2f} ms   (simulated makespan {:8.2f} ms)\n", without_hook,
             sim_sequential);
  fmt::print(
      "  ratio with / without: measured {:.4f}, simulated {:.4f}, off by {:.1f}% "
      "(target within 5%)\n",
      measured_ratio, predicted_ratio,
      100.0 * std::abs(measured_ratio - predicted_ratio) / predicted_ratio);
  return 0;
}

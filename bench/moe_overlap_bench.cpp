// Overlapped forward/backward of two MoE chunks vs the same forward and backward one after the
// other, at EP=2 (ranks as threads over Gloo). On 2 cores loopback all-to-alls are nearly free
// and would compete with compute for the CPU, so each token all-to-all gets an emulated network
// delay (serial_link.h: a sleep, it costs no CPU) sized so that all-to-all time equals
// compute time (the DeepSeek-V3 report's 1:1), as in the runtime benchmark's emulated-cost mode.
//
//   dualpipe_moe_overlap_bench [--hidden 256] [--tokens 512] [--blocks 2] [--iters 10]
//                              [--delay-us -1 (auto: 1:1)] [--trace out.json]

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <vector>

#include "dualpipe/moe/moe_stage.h"
#include "dualpipe/runtime/process_group.h"
#include "dualpipe/runtime/trace.h"
#include "serial_link.h"

namespace {

using dualpipe::moe::CommStream;
using dualpipe::moe::CommStreamOptions;
using dualpipe::moe::ModelConfig;
using dualpipe::moe::MoEStage;
using dualpipe::moe::StageOptions;
using dualpipe::runtime::MicrobatchId;
using dualpipe::runtime::TensorList;

struct Options {
  int64_t hidden = 256;
  int64_t tokens = 512;
  int blocks = 2;
  int iters = 10;
  int64_t delay_us = -1;
  std::string trace;
};

constexpr int kEp = 2;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One rank: per iteration, times "forward X mb i then backward Y mb i" (sequential) or the FB
// hook doing both (overlapped). Returns the median seconds per pair.
double measure(const Options& o, const ModelConfig& config, dualpipe::runtime::CommunicatorPtr comm,
               int rank, int64_t delay_us, bool overlapped,
               std::vector<dualpipe::runtime::TraceEvent>* trace) {
  CommStreamOptions stream_options;
  stream_options.link = dualpipe::bench::serial_link(std::chrono::microseconds(delay_us));
  stream_options.trace = trace != nullptr;
  auto stream = std::make_shared<CommStream>(comm, stream_options);
  at::manual_seed(100 + rank);
  MoEStage x(config, StageOptions{o.blocks, false, false, rank, kEp}, stream);
  MoEStage y(config, StageOptions{o.blocks, false, false, rank, kEp}, stream);
  const int64_t seq = 64;
  const int64_t batch = std::max<int64_t>(1, o.tokens / seq);
  std::vector<double> times;
  for (int it = 0; it < o.iters + 1; ++it) {
    const MicrobatchId xid{0, 0, it}, yid{0, 1, it};
    at::Tensor xin = at::randn({batch, seq, config.hidden_size}).requires_grad_();
    at::Tensor yin = at::randn({batch, seq, config.hidden_size}).requires_grad_();
    at::Tensor grad = at::randn({batch, seq, config.hidden_size});
    TensorList yout = y.forward(yid, {yin});
    std::vector<at::Tensor> barrier_tensor = {at::zeros({1})};
    comm->allreduce(barrier_tensor)->wait();
    if (trace) stream->clear_trace_events();
    const double start = now_s();
    const int64_t start_us = dualpipe::runtime::Trace::now_us();
    TensorList xout;
    if (overlapped) {
      xout = x.overlapped_forward_backward(dualpipe::runtime::ForwardHalf{xid, {xin}, nullptr, {}},
                                           y, dualpipe::runtime::BackwardHalf{yid, yout, {grad}})
                 .outputs;
    } else {
      xout = x.forward(xid, {xin});
      y.backward(yid, yout, {grad});
    }
    if (it > 0) times.push_back(now_s() - start);
    if (trace && it == o.iters) {
      *trace = stream->trace_events();
      trace->push_back({overlapped ? "FB (overlapped)" : "F then B", "compute", start_us,
                        dualpipe::runtime::Trace::now_us() - start_us});
    }
    x.backward(xid, xout, {at::ones_like(xout[0])});
  }
  return median(times);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "MoE overlapped forward/backward vs sequential, EP=2 with emulated all-to-all delay"};
  app.add_option("--hidden", o.hidden, "hidden size");
  app.add_option("--tokens", o.tokens, "tokens per micro-batch per rank");
  app.add_option("--blocks", o.blocks, "MoE blocks per stage");
  app.add_option("--iters", o.iters, "timed iterations (median reported)");
  app.add_option("--delay-us", o.delay_us,
                 "emulated delay per token all-to-all; -1: 1:1 with compute");
  app.add_option("--trace", o.trace, "write a Chrome trace of one overlapped pair per rank");
  CLI11_PARSE(app, argc, argv);

  ModelConfig config;
  config.hidden_size = o.hidden;
  config.num_heads = 4;
  config.expert_hidden_size = o.hidden;
  config.num_experts = 8;
  config.top_k = 2;
  at::set_num_threads(1);

  auto store = c10::make_intrusive<c10d::HashStore>();
  double compute = 0, sequential = 0, overlapped = 0;
  int64_t delay_used = 0;
  std::vector<std::vector<dualpipe::runtime::TraceEvent>> traces(kEp);
  std::mutex mutex;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kEp; ++rank) {
    threads.emplace_back([&, rank] {
      at::set_num_threads(1);
      auto comm = dualpipe::runtime::make_communicator(store, rank, kEp);
      // Compute time of a pair: the sequential pair without delay (loopback all-to-alls of these
      // sizes take a few percent of it).
      double c = measure(o, config, comm, rank, 0, false, nullptr);
      std::vector<at::Tensor> t = {at::tensor({c}, at::kDouble)};
      comm->allreduce(t, {c10d::ReduceOp::MAX})->wait();
      c = t[0].item<double>();
      // NOTE: 4 token all-to-alls per layer pair (dispatch, combine and their backwards).
      const int64_t delay =
          o.delay_us >= 0 ? o.delay_us : static_cast<int64_t>(c * 1e6 / (4.0 * o.blocks));
      double s = measure(o, config, comm, rank, delay, false, nullptr);
      double v =
          measure(o, config, comm, rank, delay, true, o.trace.empty() ? nullptr : &traces[rank]);
      std::lock_guard<std::mutex> lock(mutex);
      if (rank == 0) compute = c, sequential = s, overlapped = v, delay_used = delay;
    });
  }
  for (auto& t : threads) t.join();
  fmt::print("EP={} hidden={} tokens/rank={} blocks={} experts={} top_k={}\n", kEp, o.hidden,
             o.tokens, o.blocks, config.num_experts, config.top_k);
  fmt::print("compute per pair (no delay):      {:8.3f} ms\n", compute * 1e3);
  fmt::print("all-to-all delay:                 {:8.3f} ms each, {} per pair = {:.3f} ms\n",
             delay_used / 1e3, 4 * o.blocks, 4 * o.blocks * delay_used / 1e3);
  fmt::print("sequential F then B:              {:8.3f} ms\n", sequential * 1e3);
  fmt::print("overlapped FB:                    {:8.3f} ms\n", overlapped * 1e3);
  fmt::print("ratio overlapped / sequential:    {:8.3f}  (target <= 0.75)\n",
             overlapped / sequential);
  if (!o.trace.empty()) {
    dualpipe::runtime::write_chrome_trace(o.trace, traces);
    fmt::print("trace: {}\n", o.trace);
  }
  return 0;
}

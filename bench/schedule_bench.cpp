// Builds, validates and simulates DualPipe at growing sizes, up to 64 ranks x 4096
// micro-batches, and prints the time per op of each step: flat ns/op means linear time.
// A plain timer program (best of a few runs) rather than google/benchmark, because the
// interesting output is the per-op ratio across sizes in one table.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "dualpipe/schedule/allocator_tuning.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/simulator.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Timing {
  std::size_t ops = 0;
  double build = 1e30, validate = 1e30, simulate = 1e30;
  double total() const { return build + validate + simulate; }
  double makespan = 0;
};

Timing measure(const std::string& name, int ranks, int microbatches, int repeats) {
  using namespace dualpipe;
  Timing best;
  for (int i = 0; i < repeats; ++i) {
    auto start = Clock::now();
    schedule::Schedule s = schedule::build_schedule(name, ranks, microbatches);
    best.build = std::min(best.build, seconds_since(start));
    start = Clock::now();
    schedule::validate(s);
    best.validate = std::min(best.validate, seconds_since(start));
    start = Clock::now();
    sim::SimResult result = sim::simulate(s, sim::CostModel{});
    best.simulate = std::min(best.simulate, seconds_since(start));
    best.ops = 0;
    for (const auto& program : s.programs) best.ops += program.size();
    best.makespan = result.makespan;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  // --glibc-defaults measures without the allocator tuning that `dualpipe` itself applies.
  const bool glibc_defaults = argc > 1 && std::string(argv[1]) == "--glibc-defaults";
  if (!glibc_defaults) dualpipe::schedule::tune_allocator_for_large_schedules();
  const std::vector<std::pair<int, int>> sizes = {{8, 64},    {16, 256},  {32, 1024},
                                                  {64, 1024}, {64, 2048}, {64, 4096}};
  fmt::print(
      "dualpipe: build + validate + simulate (best of 3), costs F=1,B=2,W=1,FB=3, allocator: {}\n",
      glibc_defaults ? "glibc defaults" : "tuned for large schedules");
  fmt::print("{:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}\n", "ranks", "C", "ops",
             "build ms", "valid. ms", "sim ms", "total ms", "total ns/op", "sim ns/op");
  double first_ns = 0, last_ns = 0;
  for (auto [ranks, microbatches] : sizes) {
    Timing t = measure("dualpipe", ranks, microbatches, 3);
    double ns_per_op = t.total() * 1e9 / static_cast<double>(t.ops);
    if (first_ns == 0) first_ns = ns_per_op;
    last_ns = ns_per_op;
    fmt::print("{:>6} {:>6} {:>10} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>12.1f} {:>10.1f}\n",
               ranks, microbatches, t.ops, t.build * 1e3, t.validate * 1e3, t.simulate * 1e3,
               t.total() * 1e3, ns_per_op, t.simulate * 1e9 / static_cast<double>(t.ops));
  }
  fmt::print("ns/op at the largest size / at the smallest: {:.2f} (1 = linear in ops)\n",
             last_ns / first_ns);
  for (const char* name : {"dualpipev", "1f1b", "zb1p"}) {
    Timing t = measure(name, 64, 4096, 1);
    fmt::print("{:>9} 64 x 4096: {} ops, total {:.2f} ms ({:.1f} ns/op)\n", name, t.ops,
               t.total() * 1e3, t.total() * 1e9 / static_cast<double>(t.ops));
  }
  return 0;
}

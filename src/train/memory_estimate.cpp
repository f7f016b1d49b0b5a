#include "dualpipe/train/memory_estimate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/sim/simulator.h"
#include "dualpipe/train/corpus.h"

namespace dualpipe::train {
namespace {

constexpr double kFloatBytes = 4.0;

std::string gib(double bytes) {
  std::ostringstream out;
  out.precision(3);
  out << bytes / double(std::uint64_t{1} << 30) << " GiB";
  return out.str();
}

// Saved activations of one stage (num_layers / num_stages blocks) for one micro-batch.
double stage_activation_bytes(const TrainConfig& c, int seq_len) {
  const double tokens = double(c.microbatch_size) * seq_len;
  const double h = c.hidden_size;
  const double blocks = double(c.num_layers) / c.num_stages();
  // Scores and softmax probabilities: microbatch_size x heads x seq_len x seq_len each.
  const double attention = 2.0 * c.microbatch_size * c.num_heads * double(seq_len) * seq_len;
  // Norms, q/k/v/out projections and residuals (~16 h), the routed experts' and the shared
  // expert's SwiGLU intermediates (3 x 2h each), router scores.
  const double hidden = tokens * (16.0 * h + (c.top_k + 1) * 6.0 * h + c.num_physical_experts());
  // Embedding and byte logits (on the first and last stage; counted on every stage).
  const double ends = tokens * (h + 2.0 * kByteVocabSize);
  return kFloatBytes * (blocks * (attention + hidden) + ends);
}

double stage_parameter_count(const TrainConfig& c) {
  const double h = c.hidden_size;
  const double blocks = double(c.num_layers) / c.num_stages();
  const double experts_here = double(c.num_physical_experts()) / c.ep;
  const double block = 4.0 * h * h + 2.0 * h + h * c.num_physical_experts() +
                       (experts_here + 1.0) * 3.0 * h * (2.0 * h);
  return blocks * block + 2.0 * kByteVocabSize * h;
}

MemoryEstimate estimate(const TrainConfig& c, int seq_len, int peak) {
  const schedule::Placement placement =
      schedule::schedule_placement(c.schedule, c.num_ranks, {c.stages_per_rank});
  int stages_per_rank = 1;
  for (int r = 0; r < c.num_ranks; ++r) {
    stages_per_rank = std::max(stages_per_rank, placement.num_slots(r));
  }
  MemoryEstimate e;
  e.peak_activations = peak;
  // Parameter, gradient and the two AdamW moments (1/dp of them with ZeRO-1).
  const double moments = c.sharded_optimizer() ? 2.0 / c.dp : 2.0;
  e.parameter_bytes = (2.0 + moments) * kFloatBytes * stages_per_rank * stage_parameter_count(c);
  // A data-parallel replica runs micro-batches of microbatch_size / dp sequences.
  TrainConfig replica = c;
  replica.microbatch_size = c.microbatch_size / c.dp;
  e.activation_bytes = (peak + 1.0) * stage_activation_bytes(replica, seq_len);
  return e;
}

int peak_activations(const TrainConfig& c) {
  const schedule::Schedule s =
      schedule::build_schedule(c.schedule, c.num_ranks, c.num_microbatches, {c.stages_per_rank});
  return sim::simulate(s, sim::CostModel{}).max_peak_activations();
}

}  // namespace

MemoryEstimate estimate_rank_memory(const TrainConfig& config) {
  return estimate(config, config.seq_len, peak_activations(config));
}

std::uint64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return std::uint64_t(pages) * std::uint64_t(page_size);
}

void check_memory_fits(const TrainConfig& config, std::uint64_t available_bytes) {
  if (available_bytes == 0) return;
  const int peak = peak_activations(config);
  const double ranks = double(config.world_size());
  const MemoryEstimate e = estimate(config, config.seq_len, peak);
  if (ranks * e.total() <= double(available_bytes)) return;
  // The largest seq_len that would fit, everything else equal (the estimate grows with it).
  int lo = 0;
  int hi = config.seq_len;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (ranks * estimate(config, mid, peak).total() <= double(available_bytes)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  std::ostringstream out;
  out << "this config needs an estimated " << gib(e.total()) << " per rank ("
      << gib(e.parameter_bytes) << " parameters with gradients and AdamW moments, "
      << gib(e.activation_bytes) << " activations of " << e.peak_activations + 1
      << " stage micro-batches with seq_len=" << config.seq_len
      << ", microbatch_size=" << config.microbatch_size << ", num_heads=" << config.num_heads
      << ", hidden_size=" << config.hidden_size << "), " << gib(ranks * e.total()) << " for "
      << ranks << " local ranks, but only " << gib(double(available_bytes))
      << " are available (MemAvailable); ";
  if (lo >= 1) {
    out << "seq_len <= " << lo << " would fit";
  } else {
    out << "reduce the model (hidden_size, num_layers, num_experts) or the ranks";
  }
  throw std::invalid_argument(out.str());
}

}  // namespace dualpipe::train

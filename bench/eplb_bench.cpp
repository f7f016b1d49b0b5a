// EPLB benchmark: per-GPU token imbalance (max/mean) of a skewed top-k routing before and after
// rebalancing, and the planner's time at DeepSeek-V3 size (256 experts x 61 MoE layers).
//
// Loads are measured on one batch and the plan is judged on that batch and on a fresh batch
// from the same distribution (what a deployed plan sees).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <vector>

#include "dualpipe/eplb/rebalance.h"

namespace {

using dualpipe::eplb::LoadMatrix;

constexpr int kLayers = 61;
constexpr int kExperts = 256;
constexpr int kTopK = 8;
constexpr int kTokens = 8192;
constexpr double kZipfExponent = 1.0;
constexpr double kTargetMs = 50.0;

// Expert popularity per layer: Zipf over a random permutation of the experts, fixed per layer.
std::vector<std::vector<double>> popularity(std::mt19937& rng) {
  std::vector<std::vector<double>> p(kLayers, std::vector<double>(kExperts));
  for (auto& layer : p) {
    std::vector<int> rank(kExperts);
    std::iota(rank.begin(), rank.end(), 1);
    std::shuffle(rank.begin(), rank.end(), rng);
    for (int e = 0; e < kExperts; ++e) layer[e] = 1.0 / std::pow(rank[e], kZipfExponent);
  }
  return p;
}

// Tokens routed to each expert when every token picks kTopK distinct experts.
LoadMatrix route(const std::vector<std::vector<double>>& popularity, std::mt19937& rng) {
  LoadMatrix load(kLayers, std::vector<double>(kExperts, 0.0));
  for (int layer = 0; layer < kLayers; ++layer) {
    std::discrete_distribution<int> pick(popularity[layer].begin(), popularity[layer].end());
    for (int token = 0; token < kTokens; ++token) {
      int chosen[kTopK];
      for (int k = 0; k < kTopK; ++k) {
        int e;
        do e = pick(rng);
        while (std::find(chosen, chosen + k, e) != chosen + k);
        chosen[k] = e;
        load[layer][e] += 1;
      }
    }
  }
  return load;
}

double mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / v.size();
}

double max_of(const std::vector<double>& v) {
  return *std::max_element(v.begin(), v.end());
}

}  // namespace

int main() {
  using namespace dualpipe::eplb;
  std::mt19937 rng(2025);
  const auto pop = popularity(rng);
  const LoadMatrix measured = route(pop, rng);
  const LoadMatrix fresh = route(pop, rng);
  fmt::print("EPLB: {} layers x {} experts, top-{} routing of {} tokens/layer, Zipf s={}\n",
             kLayers, kExperts, kTopK, kTokens, kZipfExponent);

  struct Config {
    const char* name;
    int replicas, groups, nodes, gpus;
  };
  const Config configs[] = {
      {"hierarchical: 288 replicas, 8 groups, 4 nodes, 32 GPUs", 288, 8, 4, 32},
      {"global:       288 replicas, 32 GPUs", 288, 1, 1, 32},
      {"global:       320 replicas, 64 GPUs", 320, 1, 1, 64},
      {"no replicas:  256 slots, 8 groups, 4 nodes, 32 GPUs", 256, 8, 4, 32},
  };
  fmt::print("\nper-GPU token imbalance max/mean (mean | worst over layers), trivial -> EPLB\n");
  for (const Config& c : configs) {
    const ExpertPlacement trivial = trivial_placement(kLayers, kExperts, c.replicas, c.gpus);
    const ExpertPlacement plan = rebalance_experts(measured, c.replicas, c.groups, c.nodes, c.gpus);
    for (const auto& [label, load] :
         {std::pair{"measured batch", &measured}, std::pair{"fresh batch   ", &fresh}}) {
      const auto before = gpu_imbalance(trivial, *load);
      const auto after = gpu_imbalance(plan, *load);
      fmt::print("  {}  {}: {:.3f} | {:.3f}  ->  {:.3f} | {:.3f}\n", c.name, label, mean(before),
                 max_of(before), mean(after), max_of(after));
    }
  }

  fmt::print("\nplanner time, {} layers x {} experts (median of runs)\n", kLayers, kExperts);
  for (const Config& c : configs) {
    std::vector<double> ms;
    for (int run = 0; run < 21; ++run) {
      const auto start = std::chrono::steady_clock::now();
      const ExpertPlacement plan =
          rebalance_experts(measured, c.replicas, c.groups, c.nodes, c.gpus);
      const auto stop = std::chrono::steady_clock::now();
      if (plan.num_layers() != kLayers) return 1;
      ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    const double median = ms[ms.size() / 2];
    fmt::print("  {}: {:.3f} ms  ({:.4f} of the {:.0f} ms target)\n", c.name, median,
               median / kTargetMs, kTargetMs);
  }
  return 0;
}

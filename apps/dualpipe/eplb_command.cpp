// `dualpipe eplb`: plan expert replicas and their GPUs from measured expert loads.
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>

#include "command.h"
#include "dualpipe/eplb/load_file.h"
#include "dualpipe/eplb/rebalance.h"
#include "dualpipe/read_file.h"

namespace dualpipe::cli {
namespace {

struct EplbOptions {
  std::string input = "-";
  std::string format = "auto";
  std::string output = "both";
  int num_replicas = 0;
  int num_groups = 1;
  int num_nodes = 1;
  int num_gpus = 0;
};

std::string read_input(const std::string& path) {
  if (path == "-") return read_stream_bounded(std::cin, "load file on stdin");
  return read_file_bounded(path, "load file '" + path + "'");
}

double mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

void print_table(const eplb::ExpertPlacement& placement, const eplb::LoadMatrix& load,
                 const std::vector<double>& before, const std::vector<double>& after,
                 const EplbOptions& options) {
  const bool hierarchical = eplb::uses_hierarchical_policy(options.num_groups, options.num_nodes);
  fmt::print("EPLB: {} layers, {} experts -> {} replicas on {} GPUs ({} per GPU), {} policy",
             placement.num_layers(), placement.num_logical_experts(),
             placement.num_physical_experts(), placement.num_gpus, placement.slots_per_gpu(),
             hierarchical ? "hierarchical" : "global");
  if (hierarchical) fmt::print(" ({} groups, {} nodes)", options.num_groups, options.num_nodes);
  fmt::print("\n");
  const int gpus_per_node = options.num_gpus / (hierarchical ? options.num_nodes : 1);
  const std::vector<std::vector<double>> loads = eplb::gpu_loads(placement, load);
  for (int layer = 0; layer < placement.num_layers(); ++layer) {
    fmt::print("layer {}  (imbalance {:.3f} -> {:.3f})\n", layer, before[layer], after[layer]);
    for (int gpu = 0; gpu < placement.num_gpus; ++gpu) {
      std::string experts;
      for (int slot = 0; slot < placement.slots_per_gpu(); ++slot) {
        const int expert =
            placement.physical_to_logical[layer][gpu * placement.slots_per_gpu() + slot];
        experts += fmt::format("{:>4}", expert);
      }
      fmt::print("  gpu {:>3} (node {:>2}):{}   load {:.1f}\n", gpu, gpu / gpus_per_node, experts,
                 loads[layer][gpu]);
    }
  }
  fmt::print("per-GPU load imbalance (max/mean), mean over layers: before {:.3f}, after {:.3f}\n",
             mean(before), mean(after));
}

int run_eplb(const EplbOptions& options) {
  eplb::LoadFormat format = options.format == "json"  ? eplb::LoadFormat::kJson
                            : options.format == "csv" ? eplb::LoadFormat::kCsv
                                                      : eplb::LoadFormat::kAuto;
  if (format == eplb::LoadFormat::kAuto && options.input != "-") {
    format = eplb::format_from_path(options.input);
  }
  const eplb::LoadMatrix load = eplb::parse_loads(read_input(options.input), format);
  const eplb::ExpertPlacement placement = eplb::rebalance_experts(
      load, options.num_replicas, options.num_groups, options.num_nodes, options.num_gpus);
  const std::vector<double> before = eplb::gpu_imbalance(
      eplb::trivial_placement(placement.num_layers(), placement.num_logical_experts(),
                              placement.num_physical_experts(), placement.num_gpus),
      load);
  const std::vector<double> after = eplb::gpu_imbalance(placement, load);

  if (options.output != "json") print_table(placement, load, before, after, options);
  if (options.output != "text") {
    const nlohmann::json doc = {
        {"physical_to_logical", placement.physical_to_logical},
        {"logical_to_physical", placement.logical_to_physical},
        {"replica_count", placement.replica_count},
        {"num_gpus", placement.num_gpus},
        {"imbalance", {{"before", before}, {"after", after}}},
    };
    if (options.output == "both") fmt::print("\n");
    fmt::print("{}\n", doc.dump());
  }
  return 0;
}

}  // namespace

Command add_eplb_command(CLI::App& app) {
  auto options = std::make_shared<EplbOptions>();
  CLI::App* sub = app.add_subcommand(
      "eplb",
      "Expert-parallel load balancing: replicate hot experts and place replicas on GPUs from "
      "measured loads (JSON 2-D array or {\"weight\": ...}, or CSV with one layer per line)");
  sub->add_option("input", options->input, "Load file [layer][expert]; '-' reads stdin")
      ->capture_default_str();
  sub->add_option("--format", options->format, "Input format")
      ->check(CLI::IsMember({"auto", "json", "csv"}))
      ->capture_default_str();
  sub->add_option("-r,--replicas", options->num_replicas,
                  "Physical experts per layer (a multiple of --gpus, >= experts)")
      ->required()
      ->check(integer_in_range<int>());
  sub->add_option("-g,--groups", options->num_groups, "Expert groups")
      ->capture_default_str()
      ->check(integer_in_range<int>());
  sub->add_option("-n,--nodes", options->num_nodes, "Server nodes")
      ->capture_default_str()
      ->check(integer_in_range<int>());
  sub->add_option("--gpus", options->num_gpus, "GPUs (a multiple of --nodes)")
      ->required()
      ->check(integer_in_range<int>());
  sub->add_option("-o,--output", options->output,
                  "text: table and imbalance; json: one JSON line; both: table, then JSON")
      ->check(CLI::IsMember({"text", "json", "both"}))
      ->capture_default_str();
  return {sub, [options] { return run_eplb(*options); }};
}

}  // namespace dualpipe::cli

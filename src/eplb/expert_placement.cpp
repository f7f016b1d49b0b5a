#include "dualpipe/eplb/expert_placement.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace dualpipe::eplb {
namespace {

std::invalid_argument placement_error(int layer, const std::string& what) {
  return std::invalid_argument("expert placement, layer " + std::to_string(layer) + ": " + what);
}

}  // namespace

int ExpertPlacement::num_logical_experts() const {
  return replica_count.empty() ? 0 : static_cast<int>(replica_count.front().size());
}

int ExpertPlacement::num_physical_experts() const {
  return physical_to_logical.empty() ? 0 : static_cast<int>(physical_to_logical.front().size());
}

int ExpertPlacement::max_replicas() const {
  if (logical_to_physical.empty() || logical_to_physical.front().empty()) return 0;
  return static_cast<int>(logical_to_physical.front().front().size());
}

std::vector<int> ExpertPlacement::replicas_of(int layer, int expert) const {
  if (layer < 0 || layer >= num_layers() || expert < 0 || expert >= num_logical_experts()) {
    throw std::out_of_range("replicas_of: layer " + std::to_string(layer) + ", expert " +
                            std::to_string(expert) + " outside " + std::to_string(num_layers()) +
                            " layers x " + std::to_string(num_logical_experts()) + " experts");
  }
  const std::vector<int>& slots = logical_to_physical[layer][expert];
  return {slots.begin(), slots.begin() + replica_count[layer][expert]};
}

void ExpertPlacement::validate() const {
  const int layers = num_layers();
  const int physical = num_physical_experts();
  const int logical = num_logical_experts();
  if (num_gpus <= 0 || physical == 0 || physical % num_gpus != 0) {
    throw std::invalid_argument(
        "expert placement: num_gpus must divide the physical experts, got "
        "num_gpus=" +
        std::to_string(num_gpus) + ", num_physical_experts=" + std::to_string(physical));
  }
  if (static_cast<int>(replica_count.size()) != layers ||
      static_cast<int>(logical_to_physical.size()) != layers) {
    throw std::invalid_argument(
        "expert placement: maps disagree on the layer count: " + std::to_string(layers) + ", " +
        std::to_string(replica_count.size()) + ", " + std::to_string(logical_to_physical.size()));
  }
  const int width = max_replicas();
  for (int layer = 0; layer < layers; ++layer) {
    if (static_cast<int>(physical_to_logical[layer].size()) != physical ||
        static_cast<int>(replica_count[layer].size()) != logical ||
        static_cast<int>(logical_to_physical[layer].size()) != logical) {
      throw placement_error(layer, "ragged maps");
    }
    std::vector<int> seen(logical, 0);
    for (int p = 0; p < physical; ++p) {
      const int e = physical_to_logical[layer][p];
      if (e < 0 || e >= logical) {
        throw placement_error(layer, "physical " + std::to_string(p) + " holds expert " +
                                         std::to_string(e) + ", outside [0, " +
                                         std::to_string(logical) + ")");
      }
      ++seen[e];
    }
    for (int e = 0; e < logical; ++e) {
      const int count = replica_count[layer][e];
      if (count < 1 || count != seen[e] || count > width ||
          static_cast<int>(logical_to_physical[layer][e].size()) != width) {
        throw placement_error(layer, "expert " + std::to_string(e) + " has replica_count " +
                                         std::to_string(count) + " but " + std::to_string(seen[e]) +
                                         " physical slots");
      }
      for (int r = 0; r < width; ++r) {
        const int p = logical_to_physical[layer][e][r];
        const bool ok =
            r < count ? p >= 0 && p < physical && physical_to_logical[layer][p] == e : p == -1;
        if (!ok) {
          throw placement_error(layer, "logical_to_physical[" + std::to_string(e) + "][" +
                                           std::to_string(r) + "] = " + std::to_string(p) +
                                           " disagrees with physical_to_logical");
        }
      }
    }
  }
}

ExpertPlacement trivial_placement(int num_layers, int num_logical_experts, int num_physical_experts,
                                  int num_gpus) {
  if (num_layers < 1 || num_logical_experts < 1 || num_physical_experts < num_logical_experts ||
      num_gpus < 1 || num_physical_experts % num_gpus != 0) {
    throw std::invalid_argument(
        "trivial_placement needs layers >= 1, physical >= logical >= 1 and num_gpus dividing the "
        "physical experts, got num_layers=" +
        std::to_string(num_layers) +
        ", num_logical_experts=" + std::to_string(num_logical_experts) + ", num_physical_experts=" +
        std::to_string(num_physical_experts) + ", num_gpus=" + std::to_string(num_gpus));
  }
  const int width = (num_physical_experts + num_logical_experts - 1) / num_logical_experts;
  std::vector<int> to_logical(num_physical_experts);
  std::vector<int> counts(num_logical_experts, 0);
  std::vector<std::vector<int>> to_physical(num_logical_experts, std::vector<int>(width, -1));
  for (int p = 0; p < num_physical_experts; ++p) {
    const int e = p % num_logical_experts;
    to_logical[p] = e;
    to_physical[e][counts[e]++] = p;
  }
  ExpertPlacement placement;
  placement.num_gpus = num_gpus;
  placement.physical_to_logical.assign(num_layers, to_logical);
  placement.logical_to_physical.assign(num_layers, to_physical);
  placement.replica_count.assign(num_layers, counts);
  return placement;
}

ExpertPlacement placement_from_physical_to_logical(
    const std::vector<std::vector<int>>& physical_to_logical, int num_logical_experts,
    int num_gpus) {
  if (num_logical_experts < 1) {
    throw std::invalid_argument("expert placement needs num_logical_experts >= 1, got " +
                                std::to_string(num_logical_experts));
  }
  ExpertPlacement placement;
  placement.num_gpus = num_gpus;
  placement.physical_to_logical = physical_to_logical;
  std::vector<std::vector<std::vector<int>>> slots;
  int width = 1;
  for (size_t layer = 0; layer < physical_to_logical.size(); ++layer) {
    std::vector<std::vector<int>> of_expert(num_logical_experts);
    const std::vector<int>& map = physical_to_logical[layer];
    for (size_t p = 0; p < map.size(); ++p) {
      if (map[p] < 0 || map[p] >= num_logical_experts) {
        throw placement_error(static_cast<int>(layer),
                              "physical " + std::to_string(p) + " holds expert " +
                                  std::to_string(map[p]) + ", outside [0, " +
                                  std::to_string(num_logical_experts) + ")");
      }
      of_expert[map[p]].push_back(static_cast<int>(p));
    }
    for (const std::vector<int>& s : of_expert) width = std::max(width, static_cast<int>(s.size()));
    slots.push_back(std::move(of_expert));
  }
  for (std::vector<std::vector<int>>& of_expert : slots) {
    std::vector<int> counts;
    for (std::vector<int>& s : of_expert) {
      counts.push_back(static_cast<int>(s.size()));
      s.resize(width, -1);
    }
    placement.replica_count.push_back(std::move(counts));
    placement.logical_to_physical.push_back(std::move(of_expert));
  }
  placement.validate();
  return placement;
}

std::vector<std::vector<double>> gpu_loads(const ExpertPlacement& placement,
                                           const LoadMatrix& load) {
  const int layers = placement.num_layers();
  if (static_cast<int>(load.size()) != layers) {
    throw std::invalid_argument("gpu_loads: placement has " + std::to_string(layers) +
                                " layers, load has " + std::to_string(load.size()));
  }
  std::vector<std::vector<double>> result(layers, std::vector<double>(placement.num_gpus, 0.0));
  for (int layer = 0; layer < layers; ++layer) {
    if (static_cast<int>(load[layer].size()) != placement.num_logical_experts()) {
      throw std::invalid_argument("gpu_loads: placement has " +
                                  std::to_string(placement.num_logical_experts()) +
                                  " experts, load layer " + std::to_string(layer) + " has " +
                                  std::to_string(load[layer].size()));
    }
    for (int p = 0; p < placement.num_physical_experts(); ++p) {
      const int e = placement.physical_to_logical[layer][p];
      result[layer][placement.gpu_of(p)] += load[layer][e] / placement.replica_count[layer][e];
    }
  }
  return result;
}

std::vector<double> gpu_imbalance(const ExpertPlacement& placement, const LoadMatrix& load) {
  std::vector<double> result;
  for (const std::vector<double>& per_gpu : gpu_loads(placement, load)) {
    double total = 0, peak = 0;
    for (double l : per_gpu) {
      total += l;
      peak = std::max(peak, l);
    }
    result.push_back(total > 0 ? peak * per_gpu.size() / total : 1.0);
  }
  return result;
}

}  // namespace dualpipe::eplb

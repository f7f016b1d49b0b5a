#include "dualpipe/runtime/process_grid.h"

#include <algorithm>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

namespace dualpipe::runtime {
namespace {

std::string describe(const GridSizes& sizes) {
  return "PP=" + std::to_string(sizes.pp) + ", EP=" + std::to_string(sizes.ep) +
         ", DP=" + std::to_string(sizes.dp);
}

int index_of(const std::vector<int>& ranks, int rank) {
  return static_cast<int>(std::find(ranks.begin(), ranks.end(), rank) - ranks.begin());
}

}  // namespace

ProcessGrid::ProcessGrid(GridSizes sizes, int rank, int world_size) : sizes_(sizes), rank_(rank) {
  if (sizes.pp < 1 || sizes.ep < 1 || sizes.dp < 1) {
    throw std::invalid_argument("process grid sizes must all be >= 1, got " + describe(sizes));
  }
  if (static_cast<long long>(sizes.pp) * sizes.ep * sizes.dp != world_size) {
    throw std::invalid_argument(
        "process grid PP x EP x DP must equal the world size, got " + describe(sizes) +
        " (product " + std::to_string(static_cast<long long>(sizes.pp) * sizes.ep * sizes.dp) +
        ") for world_size=" + std::to_string(world_size));
  }
  if (rank < 0 || rank >= world_size) {
    throw std::invalid_argument(
        "process grid rank must be in [0, world_size), got rank=" + std::to_string(rank) +
        ", world_size=" + std::to_string(world_size));
  }
}

int ProcessGrid::world_rank(int pp, int ep, int dp) const {
  if (pp < 0 || pp >= sizes_.pp || ep < 0 || ep >= sizes_.ep || dp < 0 || dp >= sizes_.dp) {
    throw std::invalid_argument("grid position out of range: pp=" + std::to_string(pp) +
                                ", ep=" + std::to_string(ep) + ", dp=" + std::to_string(dp) +
                                " for " + describe(sizes_));
  }
  return (dp * sizes_.ep + ep) * sizes_.pp + pp;
}

std::vector<int> ProcessGrid::pipeline_ranks() const {
  std::vector<int> ranks;
  for (int pp = 0; pp < sizes_.pp; ++pp) ranks.push_back(world_rank(pp, ep_rank(), dp_rank()));
  return ranks;
}

std::vector<int> ProcessGrid::ep_ranks() const {
  std::vector<int> ranks;
  for (int ep = 0; ep < sizes_.ep; ++ep) ranks.push_back(world_rank(pp_rank(), ep, dp_rank()));
  return ranks;
}

std::vector<int> ProcessGrid::dp_ranks() const {
  std::vector<int> ranks;
  for (int dp = 0; dp < sizes_.dp; ++dp) ranks.push_back(world_rank(pp_rank(), ep_rank(), dp));
  return ranks;
}

void ProcessGrid::connect(const c10::intrusive_ptr<c10d::Store>& store,
                          const CommunicatorOptions& options, const std::string& name,
                          const std::vector<std::string>& hosts) {
  auto group = [&](const std::string& key, const std::vector<int>& ranks, GroupMembers& members) {
    members = group_members(name + "/" + key, ranks, hosts);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name + "/" + key, store);
    return make_communicator(prefixed, index_of(ranks, rank_), static_cast<int>(ranks.size()),
                             options);
  };
  const std::string dp = "dp" + std::to_string(dp_rank());
  const std::string ep = "ep" + std::to_string(ep_rank());
  const std::string pp = "pp" + std::to_string(pp_rank());
  pipeline_group_ = group("pipeline/" + dp + "." + ep, pipeline_ranks(), pipeline_members_);
  ep_group_ = group("ep/" + dp + "." + pp, ep_ranks(), ep_members_);
  dp_group_ = group("dp/" + ep + "." + pp, dp_ranks(), dp_members_);
  if (mirror_rank() != rank_) {
    const int low = std::min(pp_rank(), mirror_pp_rank());
    std::vector<int> pair = {world_rank(low, ep_rank(), dp_rank()),
                             world_rank(sizes_.pp - 1 - low, ep_rank(), dp_rank())};
    mirror_group_ =
        group("mirror/" + dp + "." + ep + ".pp" + std::to_string(low), pair, mirror_members_);
  }
}

}  // namespace dualpipe::runtime

#pragma once
// The process grid: world = DP x EP x PP, and the communicators of each dimension.
//
// Rank layout (pp varies fastest, then ep, then dp):
//
//   rank = (dp_rank * EP + ep_rank) * PP + pp_rank
//
//   PP=4, EP=1, DP=2:   pipeline 0 = ranks 0 1 2 3,  pipeline 1 = ranks 4 5 6 7
//                        DP groups {0,4} {1,5} {2,6} {3,7};  mirror pairs {0,3} {1,2} {4,7} {5,6}
//
// NOTE: a pipeline is a run of consecutive ranks, so with `dualpipe launch` or torchrun (which
// number the ranks of a node consecutively) a pipeline stays inside a node, where its
// point-to-point traffic is; an EP group gathers the same pipeline stage of EP pipelines (the
// MoE all-to-all of one layer), a DP group the same (ep, pp) position of every replica.
// DualPipe pairs pipeline rank r with PP-1-r: both hold a copy of model stage r and sum their
// gradients over the 2-rank mirror communicator.

#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/process_group.h"
#include "dualpipe/runtime/torch_compat.h"

namespace dualpipe::runtime {

struct GridSizes {
  int pp = 1;  // pipeline stages (ranks per pipeline)
  int ep = 1;  // expert-parallel pipelines
  int dp = 1;  // data-parallel replicas
};

class ProcessGrid {
 public:
  // Layout only, no communication. Throws std::invalid_argument (with the values) unless every
  // size is >= 1, pp * ep * dp == world_size and 0 <= rank < world_size.
  ProcessGrid(GridSizes sizes, int rank, int world_size);

  const GridSizes& sizes() const { return sizes_; }
  int rank() const { return rank_; }
  int world_size() const { return sizes_.pp * sizes_.ep * sizes_.dp; }
  int pp_rank() const { return rank_ % sizes_.pp; }
  int ep_rank() const { return (rank_ / sizes_.pp) % sizes_.ep; }
  int dp_rank() const { return rank_ / (sizes_.pp * sizes_.ep); }
  // The world rank at grid position (pp, ep, dp).
  int world_rank(int pp, int ep, int dp) const;

  // World ranks of my groups, ordered by the group-local rank (so index == group rank).
  std::vector<int> pipeline_ranks() const;  // same (dp, ep), pp = 0..PP-1
  std::vector<int> ep_ranks() const;        // same (dp, pp), ep = 0..EP-1
  std::vector<int> dp_ranks() const;        // same (ep, pp), dp = 0..DP-1

  // DualPipe's partner: pipeline rank PP-1-pp_rank (itself for the middle rank of an odd PP).
  int mirror_pp_rank() const { return sizes_.pp - 1 - pp_rank(); }
  int mirror_rank() const { return world_rank(mirror_pp_rank(), ep_rank(), dp_rank()); }

  // Creates the pipeline, EP, DP and mirror communicators of this rank. Blocking and collective:
  // every rank of the world calls it with the same store, name and sizes; it returns once all
  // of this rank's groups are connected, or throws std::runtime_error after options.timeout.
  // NOTE: each rank creates only its own groups, each over a c10d::PrefixStore named after the
  // grid, the dimension and the group's fixed coordinates (e.g. "grid/pp/dp1.ep0"), so Gloo's
  // connection keys never collide; all ranks go through the dimensions in the same order
  // (pipeline, EP, DP, mirror), and the groups of one dimension partition the world, so every
  // group that is being connected has all its members connecting it at the same time.
  // `name` tells several grids over one store apart. `hosts` (DistributedContext::hosts: one per
  // world rank, or empty) go into the groups' members, for error messages.
  void connect(const c10::intrusive_ptr<c10d::Store>& store, const CommunicatorOptions& options,
               const std::string& name = "grid", const std::vector<std::string>& hosts = {});

  // The communicators made by connect() (null before). Group rank == index in *_ranks().
  const CommunicatorPtr& pipeline_group() const { return pipeline_group_; }
  const CommunicatorPtr& ep_group() const { return ep_group_; }
  const CommunicatorPtr& dp_group() const { return dp_group_; }
  // Two ranks: the lower pp rank of the pair is group rank 0. Null when mirror_rank() == rank()
  // (middle rank of an odd PP).
  const CommunicatorPtr& mirror_group() const { return mirror_group_; }
  // Who is in each of them (named like their store prefix, e.g. "grid/dp/ep0.pp1"), for
  // wait_collective; empty before connect().
  const GroupMembers& pipeline_members() const { return pipeline_members_; }
  const GroupMembers& ep_members() const { return ep_members_; }
  const GroupMembers& dp_members() const { return dp_members_; }
  const GroupMembers& mirror_members() const { return mirror_members_; }

 private:
  GridSizes sizes_;
  int rank_ = 0;
  CommunicatorPtr pipeline_group_;
  CommunicatorPtr ep_group_;
  CommunicatorPtr dp_group_;
  CommunicatorPtr mirror_group_;
  GroupMembers pipeline_members_;
  GroupMembers ep_members_;
  GroupMembers dp_members_;
  GroupMembers mirror_members_;
};

}  // namespace dualpipe::runtime

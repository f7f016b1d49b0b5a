#pragma once
// ZeRO-1 AdamW: the optimiser state of parameters that every rank of a data-parallel group
// holds a copy of, split over the group. The parameters are seen as one flat buffer per dtype
// (in list order, as runtime::flatten_gradients lays them out), cut into `size` equal shards
// (the last ones may be short); DP rank d keeps the AdamW moments of shard d only. A step
//
//   1. sums the gradients over the group and keeps shard d of the sum (a reduce-scatter),
//   2. updates shard d of the parameters with the same element-wise AdamW as train::AdamW,
//   3. all-gathers the updated shards into every rank's parameters.
//
// So a group of N ranks holds 1/N of the moments each, and (the update being element-wise and
// the sums the same) the parameters after a step equal those of N replicas that allreduce the
// gradients and each run train::AdamW over everything.

#include <ATen/Tensor.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/optimizer.h"

namespace dualpipe::train {

class ShardedAdamW {
 public:
  // `names[i]` names `params[i]`; every rank of `group` passes parameters of the same names,
  // shapes and dtypes in the same order (its replicas of them). Allocates the moments of this
  // rank's shard; does not communicate. Throws std::invalid_argument when the lists differ in
  // length or `group` is null. `members` (who is in `group`) names the peers in errors.
  ShardedAdamW(std::vector<std::string> names, std::vector<at::Tensor> params, AdamWOptions options,
               runtime::CommunicatorPtr group, std::chrono::milliseconds timeout,
               runtime::GroupMembers members = {});

  // One update with learning rate `lr` from the parameters' .grad() summed over the group (a
  // parameter without a gradient counts as zeros: every parameter is updated). Blocking and
  // collective: every rank of the group calls it at the same step. On return every rank's
  // parameters hold the same updated values; .grad() is left as it was (call zero_grad()).
  // Throws std::runtime_error when a collective fails or times out.
  void step(double lr);
  void zero_grad();
  int64_t num_steps() const { return step_; }
  // Bytes of the moment tensors this rank holds: about 1/size of train::AdamW's over the same
  // parameters.
  int64_t state_bytes() const;
  // The layout, for manifests and error messages: {"dp": size, "dp_rank": rank, "buckets":
  // [{"dtype", "numel", "shard_begin", "shard_end"}, ...]}.
  nlohmann::json layout() const;

  // Every parameter's whole moments {exp_avg, exp_avg_sq} (new tensors of the parameter's
  // shape), assembled from every rank's shard, e.g. for EPLB to move them with an expert.
  // Blocking and collective over the group. NOTE: transiently holds the whole state (what a
  // replicated optimiser holds all the time).
  std::vector<std::vector<at::Tensor>> gather_moments() const;
  // Takes this rank's shard of `moments` (as gather_moments returned them, possibly changed
  // since, the same on every rank) as its state. Local; no communication.
  void scatter_moments(const std::vector<std::vector<at::Tensor>>& moments);
  // scatter_moments(moments) and the step count `step`: the state of a replicated optimiser, or
  // of another group size (see moments_from_shards), resharded. Local.
  void set_state(const std::vector<std::vector<at::Tensor>>& moments, int64_t step);

  // Every parameter's whole moments {exp_avg, exp_avg_sq} from the shards that save_state wrote
  // on each rank of a group of shards.size() ranks (shards[d]: rank d's), for parameters laid
  // out as `params`. Pure. Throws std::invalid_argument when an entry is missing or the shards'
  // layouts do not tile the flat buffers of `params`.
  static std::vector<std::vector<at::Tensor>> moments_from_shards(
      const std::vector<at::Tensor>& params, const std::vector<NamedTensors>& shards,
      const std::string& prefix);

  // This rank's shard as "<prefix>zero.<bucket>.exp_avg" / ".exp_avg_sq", "<prefix>zero.layout"
  // (dp, dp_rank and each bucket's numel) and "<prefix>step".
  void save_state(NamedTensors& out, const std::string& prefix) const;
  // Restores what save_state() wrote on the same rank of a group of the same size. Throws
  // std::invalid_argument naming a missing entry or, for a shard of another layout, both layouts.
  void load_state(const NamedTensors& in, const std::string& prefix);

 private:
  struct Bucket {
    at::TensorOptions options;
    std::vector<int> params;         // indices into params_, in flat order
    std::vector<int64_t> offsets;    // each one's first element in the flat buffer
    int64_t numel = 0;               // the flat buffer's length
    int64_t shard_numel = 0;         // ceil(numel / size): every shard's padded length
    int64_t begin = 0, end = 0;      // this rank's shard [begin, end) of the flat buffer
    at::Tensor exp_avg, exp_avg_sq;  // [end - begin]
  };
  // The buckets of `params` for shard `rank` of `size`, with zero moments.
  static std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& params, int size,
                                          int rank);
  // Copies elements [begin, end) of the bucket's flat view of `tensors` (one per parameter of
  // the whole list, as params_) into `flat` ([end - begin]), or back from it with `to_tensors`.
  static void copy_range(const Bucket& bucket, int64_t begin, int64_t end,
                         const std::vector<at::Tensor>& tensors, at::Tensor& flat, bool to_tensors);
  // Fills every rank's shard of the bucket from `local` (this rank's, [end - begin]) into
  // `tensors` (whole, one per parameter). Collective.
  void all_gather_into(const Bucket& bucket, const at::Tensor& local,
                       const std::vector<at::Tensor>& tensors) const;

  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  AdamWOptions options_;
  runtime::CommunicatorPtr group_;
  std::chrono::milliseconds timeout_;
  runtime::GroupMembers members_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<Bucket> buckets_;
  int64_t step_ = 0;
};

}  // namespace dualpipe::train

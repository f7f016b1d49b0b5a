#include "dualpipe/runtime/pipeline.h"

#include <ATen/ATen.h>

#include <deque>
#include <stdexcept>

#include "dualpipe/check.h"
#include "dualpipe/runtime/gradient_buffers.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"

namespace dualpipe::runtime {
namespace {

// NOTE: far above the p2p channel's tag space for any realistic size (it checks its own bound).
constexpr int kMirrorTagBase = 2000000000;
constexpr std::size_t kMaxGradientBuckets = 16;  // dtype x device combinations in one stage

int mirror_tag(std::size_t slot, std::size_t bucket) {
  DUALPIPE_CHECK_LT(bucket, kMaxGradientBuckets,
                    "a stage's parameters span too many (dtype, device) combinations");
  return kMirrorTagBase + static_cast<int>(slot * kMaxGradientBuckets + bucket);
}

std::vector<int> inverse_mapping(const std::vector<int>& mapping, int size) {
  std::vector<int> comm_rank_of(size);
  if (mapping.empty()) {
    for (int r = 0; r < size; ++r) comm_rank_of[r] = r;
    return comm_rank_of;
  }
  DUALPIPE_CHECK(static_cast<int>(mapping.size()) == size, "rank_mapping has ", mapping.size(),
                 " entries but the communicator has ", size, " ranks");
  std::vector<bool> seen(size, false);
  for (int c = 0; c < size; ++c) {
    const int p = mapping[c];
    DUALPIPE_CHECK(p >= 0 && p < size && !seen[p], "rank_mapping must be a permutation of 0..",
                   size - 1, ", got ", p, " at position ", c);
    seen[p] = true;
    comm_rank_of[p] = c;
  }
  return comm_rank_of;
}

// Splits each tensor along dim 0 into `chunks` equal parts: result[chunk] = {part of each}.
std::vector<TensorList> split_batch(const TensorList& tensors, int chunks, int dim,
                                    const char* what, int rank) {
  std::vector<TensorList> result(chunks);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    DUALPIPE_CHECK(
        t.defined() && t.dim() > dim && t.size(dim) % chunks == 0, "rank ", rank, ": ", what, "[",
        i, "] has batch size ", t.defined() && t.dim() > dim ? std::to_string(t.size(dim)) : "none",
        " (dimension ", dim, "), which does not split into ", chunks, " equal micro-batches");
    std::vector<at::Tensor> parts = t.split(t.size(dim) / chunks, dim);
    for (int c = 0; c < chunks; ++c) result[c].push_back(parts[c]);
  }
  return result;
}

}  // namespace

Pipeline::Pipeline(std::string schedule_name, std::vector<StagePtr> modules, CommunicatorPtr comm,
                   PipelineOptions options)
    : schedule_name_(std::move(schedule_name)),
      modules_(modules),
      comm_(comm),
      options_(std::move(options)),
      rank_(options_.rank_mapping.empty() ? comm->getRank()
                                          : options_.rank_mapping.at(comm->getRank())),
      num_ranks_(comm->getSize()),
      comm_rank_of_(inverse_mapping(options_.rank_mapping, comm->getSize())),
      executor_(rank_, std::move(modules), comm, comm_rank_of_,
                ExecutorOptions{options_.timeout, options_.trace, options_.members}) {
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    DUALPIPE_CHECK(modules_[i] != nullptr, "pipeline rank ", rank_, ": stage module ", i,
                   " is null");
  }
  DUALPIPE_CHECK_GE(options_.batch_dim, 0);
}

Pipeline::Pipeline(schedule::Schedule loaded, std::vector<StagePtr> modules, CommunicatorPtr comm,
                   PipelineOptions options)
    : Pipeline(loaded.name, std::move(modules), comm, std::move(options)) {
  DUALPIPE_CHECK_EQ(loaded.num_ranks(), num_ranks_, "loaded schedule '", loaded.name,
                    "' has another number of ranks than the pipeline communicator");
  schedule::validate(loaded);
  schedule_ = std::move(loaded);
  loaded_ = true;
}

namespace {

schedule::Placement placement_with_rank(const std::string& schedule_name, int num_ranks, int rank,
                                        const schedule::BuildOptions& build) {
  schedule::Placement placement = schedule::schedule_placement(schedule_name, num_ranks, build);
  if (rank < 0 || rank >= num_ranks) {
    throw std::out_of_range("pipeline rank " + std::to_string(rank) + " is outside [0, " +
                            std::to_string(num_ranks) + ") for schedule \"" + schedule_name + "\"");
  }
  return placement;
}

}  // namespace

std::vector<schedule::StageId> Pipeline::stages_for(const std::string& schedule_name, int num_ranks,
                                                    int rank, const schedule::BuildOptions& build) {
  return placement_with_rank(schedule_name, num_ranks, rank, build).stages_on(rank);
}

bool Pipeline::takes_inputs(const std::string& schedule_name, int num_ranks, int rank,
                            const schedule::BuildOptions& build) {
  return !placement_with_rank(schedule_name, num_ranks, rank, build)
              .directions_starting_on(rank)
              .empty();
}

bool Pipeline::takes_labels(const std::string& schedule_name, int num_ranks, int rank,
                            const schedule::BuildOptions& build) {
  return !placement_with_rank(schedule_name, num_ranks, rank, build)
              .directions_ending_on(rank)
              .empty();
}

namespace {

// Hands direction d's share of `batch` (split into micro-batches) to `per_direction_lists[d]` for
// each direction in `directions`, in order: they take consecutive parts of the batch.
void distribute_batch(const TensorList& batch, const std::vector<int>& directions,
                      int per_direction, int dim, const char* what, int rank,
                      std::vector<std::vector<TensorList>>& per_direction_lists) {
  auto chunks =
      split_batch(batch, static_cast<int>(directions.size()) * per_direction, dim, what, rank);
  for (std::size_t i = 0; i < directions.size(); ++i) {
    per_direction_lists[directions[i]].assign(chunks.begin() + i * per_direction,
                                              chunks.begin() + (i + 1) * per_direction);
  }
}

// The step's result on this rank: the losses and (when asked for, or forward-only) the outputs
// of the directions ending here, in direction then micro-batch order.
StepResult collect_result(StepOutput& out, const std::vector<int>& label_directions,
                          bool keep_outputs, int dim) {
  StepResult result;
  std::vector<at::Tensor> losses;
  std::vector<TensorList> outputs;
  for (int d : label_directions) {
    for (const at::Tensor& loss : out.losses[d]) {
      if (loss.defined()) losses.push_back(loss);
    }
    for (TensorList& o : out.outputs[d]) {
      if (!o.empty()) outputs.push_back(std::move(o));
    }
  }
  if (!losses.empty()) result.loss = at::stack(losses);
  if (keep_outputs && !outputs.empty()) {
    for (std::size_t i = 0; i < outputs[0].size(); ++i) {
      std::vector<at::Tensor> parts;
      for (const TensorList& o : outputs) parts.push_back(o[i]);
      result.outputs.push_back(at::cat(parts, dim));
    }
  }
  return result;
}

}  // namespace

StepData Pipeline::step_data(const TensorList& inputs, const Criterion& criterion,
                             const TensorList& labels, bool return_outputs, bool training) const {
  const schedule::Placement& placement = schedule_.placement;
  const int per_direction = schedule_.microbatches_per_direction();
  const std::vector<int> input_directions = placement.directions_starting_on(rank_);
  const std::vector<int> label_directions = placement.directions_ending_on(rank_);
  StepData data;
  data.inputs.resize(schedule_.num_directions());
  data.labels.resize(schedule_.num_directions());
  data.return_outputs = return_outputs;
  if (!input_directions.empty()) {
    DUALPIPE_CHECK(!inputs.empty(), "pipeline rank ", rank_, " holds the first stage of direction ",
                   input_directions[0], " of '", schedule_name_, "' and needs inputs, got none");
    distribute_batch(inputs, input_directions, per_direction, options_.batch_dim, "inputs", rank_,
                     data.inputs);
  }
  if (!label_directions.empty() && (training || criterion)) {
    DUALPIPE_CHECK(static_cast<bool>(criterion), "pipeline rank ", rank_,
                   " holds a last stage and needs a criterion to train");
    DUALPIPE_CHECK(!labels.empty(), "pipeline rank ", rank_, " holds the last stage of direction ",
                   label_directions[0], " and needs labels");
    distribute_batch(labels, label_directions, per_direction, options_.batch_dim, "labels", rank_,
                     data.labels);
    data.criterion = &criterion;
  }
  return data;
}

StepResult Pipeline::step(const TensorList& inputs, int num_microbatches,
                          const Criterion& criterion, const TensorList& labels,
                          bool return_outputs) {
  if (loaded_) {
    DUALPIPE_CHECK_EQ(num_microbatches, schedule_.num_microbatches, "pipeline rank ", rank_,
                      " runs a loaded schedule of '", schedule_name_, "'");
  } else if (schedule_.programs.empty() || schedule_.num_microbatches != num_microbatches) {
    schedule_ =
        schedule::build_schedule(schedule_name_, num_ranks_, num_microbatches, options_.build);
  }
  const schedule::Placement& placement = schedule_.placement;
  DUALPIPE_CHECK(static_cast<int>(modules_.size()) == placement.num_slots(rank_), "pipeline rank ",
                 rank_, " of '", schedule_name_, "' must hold ", placement.num_slots(rank_),
                 " stage modules, got ", modules_.size());
  const bool training = at::GradMode::is_enabled();
  const StepData data = step_data(inputs, criterion, labels, return_outputs, training);

  // NOTE: gradient accumulation (several steps before one optimiser step). The mirror-copy sum
  // and the data-parallel average must see only what this step adds, or the gradients of earlier
  // steps would be summed and averaged again: they are set aside for the step and added back.
  std::vector<at::Tensor> params;
  for (const StagePtr& m : modules_) {
    for (const at::Tensor& p : m->parameters()) params.push_back(p);
  }
  const bool sync_mirrors = options_.sync_mirror_gradients && placement.num_directions() > 1;
  const bool average = options_.data_parallel && options_.data_parallel->getSize() > 1;
  const bool sync = training && (sync_mirrors || average);
  std::vector<at::Tensor> earlier;
  if (sync) earlier = take_gradients(params);
  StepOutput out;
  try {
    out = executor_.run(schedule_, data);
    if (sync && sync_mirrors) sync_mirror_gradients();
    if (sync && average) average_over_replicas(params);
  } catch (...) {
    if (sync) restore_gradients(params, earlier, /*drop_new=*/true);
    throw;
  }
  if (sync) restore_gradients(params, earlier, /*drop_new=*/false);
  return collect_result(out, placement.directions_ending_on(rank_), return_outputs || !training,
                        options_.batch_dim);
}

void Pipeline::average_over_replicas(std::vector<at::Tensor>& params) {
  const CommunicatorPtr& group = options_.data_parallel;
  reduce_gradients(params, [&](std::vector<at::Tensor>& buckets) {
    wait_collective(group->allreduce(buckets), *group, options_.data_parallel_members,
                    "allreduce averaging the gradients of pipeline rank " + std::to_string(rank_) +
                        " over " + std::to_string(group->getSize()) + " data-parallel replicas",
                    options_.timeout);
    for (at::Tensor& bucket : buckets) bucket.div_(group->getSize());
  });
}

void Pipeline::sync_mirror_gradients() {
  // NOTE: stage instances with the same stage number in different directions are copies of one
  // model stage (DualPipe's (0, s) on rank s and (1, s) on rank R-1-s); schedules with one
  // direction have none. The placement says where each copy is; no schedule name is needed.
  const schedule::Placement placement =
      schedule_.programs.empty()
          ? schedule::schedule_placement(schedule_name_, num_ranks_, options_.build)
          : schedule_.placement;
  if (placement.num_directions() < 2) return;
  struct Exchange {
    std::size_t slot;
    int peer;
    FlatGradients received;  // the copy's gradients, laid out as this slot's
  };
  std::vector<Exchange> exchanges;
  std::vector<WorkPtr> works;
  std::vector<int> works_peer;
  // NOTE: a deque, so the tensor lists handed to send/recv stay where they are until the works
  // complete.
  std::deque<std::vector<at::Tensor>> buffers;
  for (std::size_t slot = 0; slot < modules_.size(); ++slot) {
    const schedule::StageId id = placement.stage_at(rank_, static_cast<int>(slot));
    for (int d = 0; d < placement.num_directions(); ++d) {
      if (d == id.direction) continue;
      const schedule::StageLocation copy = placement.at(d, id.stage);
      if (copy.rank == rank_) continue;  // NOTE: a copy on this rank is not summed (none today)
      const int peer = comm_rank_of_[copy.rank];
      // NOTE: both copies have the same parameters, so the same buckets (one per dtype and
      // device) in the same layout.
      FlatGradients mine = flatten_gradients(modules_[slot]->parameters());
      Exchange exchange{slot, copy.rank, mine};
      for (std::size_t b = 0; b < mine.buckets.size(); ++b) {
        // Tags name the sender's slot and the bucket, so each receive meets the copy it sums.
        exchange.received.buckets[b] = at::empty_like(mine.buckets[b]);
        buffers.push_back({exchange.received.buckets[b]});
        works.push_back(comm_->recv(buffers.back(), peer, mirror_tag(copy.slot, b)));
        works_peer.push_back(copy.rank);
        buffers.push_back({mine.buckets[b]});
        works.push_back(comm_->send(buffers.back(), peer, mirror_tag(slot, b)));
        works_peer.push_back(copy.rank);
      }
      exchanges.push_back(std::move(exchange));
    }
  }
  for (std::size_t i = 0; i < works.size(); ++i) {
    try {
      works[i]->wait(options_.timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error(with_peers_waited_for(
          "rank " + std::to_string(rank_) + " exchanging mirror gradients with rank " +
              std::to_string(works_peer[i]) + " (timeout " +
              std::to_string(options_.timeout.count()) + " ms) failed: " + e.what(),
          {peer_in_group(options_.members, comm_rank_of_.at(works_peer[i]), comm_rank_of_.at(rank_),
                         works_peer[i])}));
    }
  }
  for (Exchange& exchange : exchanges) {
    std::vector<at::Tensor> params = modules_[exchange.slot]->parameters();
    unflatten_gradients(params, exchange.received, GradientWrite::kAdd);
  }
}

}  // namespace dualpipe::runtime

#pragma once
// The user-facing pipeline: one training/inference step over any schedule by name, with the
// DualPipe reference's contract.
//
// Loss scaling (as in the reference): the criterion gives one loss per micro-batch and each
// micro-batch's loss is back-propagated as is, so parameter gradients are those of the SUM of
// the micro-batch losses (use a criterion with 1/num_microbatches inside for a mean). With a
// data-parallel communicator, gradients are summed over replicas and divided by the number of
// replicas: the gradient of the replicas' mean of their summed losses.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe::runtime {

struct PipelineOptions {
  // rank_mapping[communicator rank] = pipeline rank (the reference's `rank_mapping`); empty
  // means the identity.
  std::vector<int> rank_mapping;
  // Gradients are averaged over this communicator's ranks at the end of each training step.
  CommunicatorPtr data_parallel;
  std::chrono::milliseconds timeout{60000};
  bool trace = false;
  // DualPipe only: sum the gradients of the two copies of each stage at the end of step().
  bool sync_mirror_gradients = true;
  // The dimension of inputs, labels and outputs that step() splits into micro-batches and
  // concatenates them along (the reference's `batch_dim`).
  int batch_dim = 0;
  // What the schedule is built with beyond its sizes (interleaved-1f1b's stages per rank);
  // stages_for() etc. must be asked with the same.
  schedule::BuildOptions build;
  // Who is in the pipeline communicator and in data_parallel (by communicator rank), for errors
  // that name a lost peer by world rank and host; unknown by default.
  GroupMembers members;
  GroupMembers data_parallel_members;
};

struct StepResult {
  // Per-micro-batch losses (detached, 1-D, micro-batch order) of the directions whose last stage
  // is on this rank (DualPipe: rank 0 holds direction 1's, rank R-1 direction 0's); undefined on
  // other ranks or without a criterion.
  at::Tensor loss;
  // The last stage's outputs, concatenated over micro-batches along options.batch_dim, when
  // return_outputs (or forward-only); empty elsewhere.
  TensorList outputs;
};

class Pipeline {
 public:
  // `modules[slot]` are this rank's stages for schedule `schedule_name` ("dualpipe",
  // "dualpipev", "1f1b", "zb1p", "gpipe"). Does not communicate; `comm` is the pipeline group.
  Pipeline(std::string schedule_name, std::vector<StagePtr> modules, CommunicatorPtr comm,
           PipelineOptions options = {});
  // Runs `loaded` (a schedule file read by schedule::read_schedule_file, e.g. a PyTorch CSV)
  // every step instead of building one by name: `modules[slot]` are this rank's stages in the
  // loaded placement (loaded.placement.stage_at(rank, slot)), and step() takes exactly
  // loaded.num_microbatches. Validates `loaded` (schedule::validate) and checks that it has
  // comm's number of ranks; throws std::invalid_argument otherwise. Does not communicate.
  Pipeline(schedule::Schedule loaded, std::vector<StagePtr> modules, CommunicatorPtr comm,
           PipelineOptions options = {});
  virtual ~Pipeline() = default;

  // One step. Blocking; all pipeline ranks call it with the same num_microbatches.
  //   inputs: needed only on ranks holding a first stage: the batch of the direction(s) starting
  //           there (DualPipe: rank 0 the first half of the batch, rank R-1 the second half),
  //           split along options.batch_dim into that direction's micro-batches.
  //   labels: needed only on ranks holding a last stage, split the same way (DualPipe: rank 0
  //           holds direction 1's labels, rank R-1 direction 0's).
  // With gradients enabled it trains: this step's gradients are summed over the copies of each
  // model stage (DualPipe, unless options.sync_mirror_gradients is false) and averaged over the
  // data-parallel replicas (collectives: every pipeline and data-parallel rank takes part), then
  // added to what the modules' .grad() already held. So several steps before one optimiser step
  // accumulate the gradients of the summed losses, each step synced once. Under
  // torch::NoGradGuard it runs forward only and returns the outputs. Argument errors
  // (micro-batch count, missing inputs, indivisible batch) throw std::invalid_argument before
  // any communication; peer failures throw std::runtime_error (see Executor::run), after which
  // the modules' .grad() are what they were before the step.
  StepResult step(const TensorList& inputs, int num_microbatches, const Criterion& criterion = {},
                  const TensorList& labels = {}, bool return_outputs = false);

  // Which model stages pipeline rank `rank` holds for `schedule_name` on `num_ranks` ranks, by
  // slot: modules[slot] of the constructor must be stage_ids[slot].stage of the model (DualPipe
  // rank r: {(0, r), (1, R-1-r)}, the second a copy of model stage R-1-r). Pure; no schedule is
  // built. Throws std::invalid_argument for an unknown schedule or a rank count it never
  // accepts, std::out_of_range for rank outside [0, num_ranks).
  static std::vector<schedule::StageId> stages_for(const std::string& schedule_name, int num_ranks,
                                                   int rank,
                                                   const schedule::BuildOptions& build = {});
  // Whether pipeline rank `rank` must pass inputs (holds a first stage) / labels (holds a last
  // stage) to step(). DualPipe: ranks 0 and R-1 both; the others: rank 0 inputs, rank R-1
  // labels (DualPipeV: rank 0 both). Same errors as stages_for.
  static bool takes_inputs(const std::string& schedule_name, int num_ranks, int rank,
                           const schedule::BuildOptions& build = {});
  static bool takes_labels(const std::string& schedule_name, int num_ranks, int rank,
                           const schedule::BuildOptions& build = {});

  // Adds the gradients of the copies of each model stage that the schedule's directions hold
  // (DualPipe: rank s slot 0 and rank R-1-s slot 1) so every copy holds the sum. Blocking; every
  // pipeline rank must call it. No-op for schedules with one direction (no copies).
  void sync_mirror_gradients();

  int rank() const { return rank_; }
  int num_ranks() const { return num_ranks_; }
  const std::string& schedule_name() const { return schedule_name_; }
  const Executor& executor() const { return executor_; }
  // The schedule of the last step.
  const schedule::Schedule& last_schedule() const { return schedule_; }

 private:
  // This rank's share of step()'s arguments, split into micro-batches per direction; checks that
  // the ranks holding first (last) stages got inputs (a criterion and labels).
  StepData step_data(const TensorList& inputs, const Criterion& criterion, const TensorList& labels,
                     bool return_outputs, bool training) const;
  // Averages the gradients of `params` (this step's only) over the data-parallel replicas.
  void average_over_replicas(std::vector<at::Tensor>& params);

  std::string schedule_name_;
  std::vector<StagePtr> modules_;
  CommunicatorPtr comm_;
  PipelineOptions options_;
  int rank_;
  int num_ranks_;
  std::vector<int> comm_rank_of_;
  Executor executor_;
  schedule::Schedule schedule_;
  bool loaded_ = false;  // schedule_ came from the loaded-schedule constructor; never rebuilt
};

// The reference's DualPipe: modules = {stage r (direction 0), stage R-1-r (direction 1)}.
class DualPipe : public Pipeline {
 public:
  DualPipe(StagePtr module0, StagePtr module1, CommunicatorPtr comm, PipelineOptions options = {})
      : Pipeline("dualpipe", {std::move(module0), std::move(module1)}, std::move(comm),
                 std::move(options)) {}
};

// The reference's DualPipeV: modules = {stage r, stage 2R-1-r}; inputs and loss on rank 0.
class DualPipeV : public Pipeline {
 public:
  DualPipeV(StagePtr module0, StagePtr module1, CommunicatorPtr comm, PipelineOptions options = {})
      : Pipeline("dualpipev", {std::move(module0), std::move(module1)}, std::move(comm),
                 std::move(options)) {}
};

}  // namespace dualpipe::runtime

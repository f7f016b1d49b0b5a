#include "dualpipe/train/trainer.h"

#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "dualpipe/check.h"
#include "dualpipe/moe/comm_stream.h"
#include "dualpipe/runtime/gradient_buffers.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/runtime/process_grid.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/expert_balancer.h"
#include "dualpipe/train/loss_curve.h"
#include "dualpipe/train/metrics.h"
#include "dualpipe/train/model.h"
#include "dualpipe/train/optimizer.h"
#include "dualpipe/train/pipeline_report.h"
#include "dualpipe/train/trainable_model.h"
#include "dualpipe/train/training_data.h"
#include "dualpipe/train/zero_optimizer.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Checks the config and that the world has num_ranks * ep * dp processes; returns the world size.
int checked_world_size(const TrainConfig& config, const runtime::DistributedContext& context) {
  config.validate();
  const int world_size = context.world ? context.world->getSize() : 1;
  if (world_size != config.world_size()) {
    throw std::invalid_argument(
        "training needs num_ranks * ep * dp = " + std::to_string(config.num_ranks) + " * " +
        std::to_string(config.ep) + " * " + std::to_string(config.dp) +
        " processes, got a world of " + std::to_string(world_size));
  }
  return world_size;
}

// "PP=2 x EP=2 x DP=2, ZeRO-1": the grid and how the optimiser state lies on it.
std::string describe_grid(int pp, int ep, int dp, bool sharded) {
  const std::string grid =
      "PP=" + std::to_string(pp) + " x EP=" + std::to_string(ep) + " x DP=" + std::to_string(dp);
  if (dp == 1) return grid;
  return grid + (sharded ? ", ZeRO-1 (AdamW moments sharded over DP)"
                         : ", AdamW moments replicated on every DP rank");
}

// The PP x EP x DP grid of the job, connected. Collective over the world.
runtime::ProcessGrid connected_grid(const TrainConfig& config, runtime::DistributedContext& context,
                                    int world_size) {
  runtime::ProcessGrid grid({config.num_ranks, config.ep, config.dp}, context.env.rank, world_size);
  grid.connect(context.store, context.options, "train", context.hosts);
  return grid;
}

// The model stage in each placement slot of pipeline rank `rank`.
std::vector<int> stages_of_rank(const TrainConfig& config, int rank) {
  std::vector<int> stages;
  for (const schedule::StageId& id : runtime::Pipeline::stages_for(
           config.schedule, config.num_ranks, rank, {config.stages_per_rank})) {
    // NOTE: DualPipe's (1, s) is a second copy of model stage s, so the stage number alone names
    // the weights in every schedule.
    stages.push_back(id.stage);
  }
  return stages;
}

std::vector<runtime::StagePtr> as_modules(
    const std::vector<std::shared_ptr<moe::MoEStage>>& stages) {
  return std::vector<runtime::StagePtr>(stages.begin(), stages.end());
}

runtime::PipelineOptions traced_pipeline_options(const TrainConfig& config,
                                                 const runtime::ProcessGrid& grid,
                                                 std::chrono::milliseconds timeout) {
  runtime::PipelineOptions options;
  options.members = grid.pipeline_members();
  options.timeout = timeout;
  options.trace = true;
  options.build.stages_per_rank = config.stages_per_rank;
  return options;
}

// Every MoE layer module of this rank with its index in the model.
std::vector<LocalLayer> local_layers(const TrainConfig& config, const TrainableModel& model) {
  std::vector<LocalLayer> layers;
  for (std::size_t slot = 0; slot < model.stages.size(); ++slot) {
    moe::MoEStage& stage = *model.stages[slot];
    for (int b = 0; b < stage.num_blocks(); ++b) {
      LocalLayer l;
      l.stage = model.stage_of_slot[slot];
      l.block = b;
      l.layer = layer_index(config, l.stage, b);
      l.module = stage.block(b).moe().get();
      layers.push_back(l);
    }
  }
  return layers;
}

// {tensor}, or {} for an undefined tensor (a rank without first or last stage).
runtime::TensorList list_of_defined(const at::Tensor& tensor) {
  return tensor.defined() ? runtime::TensorList{tensor} : runtime::TensorList{};
}

// Sums `tensor` over `comm` (whose members are `members`); `what` names it in errors ("the
// step's losses"). Throws std::runtime_error naming the peers waited for (wait_collective).
void allreduce_sum(const runtime::CommunicatorPtr& comm, const runtime::GroupMembers& members,
                   at::Tensor& tensor, const std::string& what, std::chrono::milliseconds timeout) {
  if (!comm || comm->getSize() == 1) return;
  std::vector<at::Tensor> tensors = {tensor};
  runtime::wait_collective(comm->allreduce(tensors), *comm, members, "allreduce of " + what,
                           timeout);
}

// Sums the gradients of the parameters every EP rank holds a replica of (all but the routed
// experts, which each EP rank holds a shard of) over the EP group: each EP pipeline saw its own
// part of the batch.
void sync_ep_gradients(const std::vector<std::shared_ptr<moe::MoEStage>>& stages,
                       const runtime::CommunicatorPtr& ep_group,
                       const runtime::GroupMembers& ep_members, std::chrono::milliseconds timeout) {
  if (!ep_group || ep_group->getSize() == 1) return;
  std::vector<at::Tensor> replicated;
  for (auto& stage : stages) {
    for (auto& item : stage->named_parameters()) {
      if (item.key().find(".experts.") == std::string::npos) replicated.push_back(item.value());
    }
  }
  runtime::reduce_gradients(replicated, [&](std::vector<at::Tensor>& buckets) {
    for (at::Tensor& bucket : buckets) {
      allreduce_sum(ep_group, ep_members, bucket, "replicated gradients over EP", timeout);
    }
  });
}

// A rank's per-micro-batch losses of one pipeline step: values[i] is micro-batch
// microbatches[i]'s. Both empty on a rank without a last stage.
struct RankLosses {
  std::vector<int> microbatches;
  std::vector<double> values;
};

RankLosses rank_losses(const at::Tensor& loss, const std::vector<int>& microbatches) {
  RankLosses losses;
  if (!loss.defined()) return losses;
  losses.microbatches = microbatches;
  const at::Tensor values = loss.to(at::kCPU, at::kDouble).contiguous();
  const double* data = values.data_ptr<double>();
  losses.values.assign(data, data + values.numel());
  return losses;
}

// Scatters this rank's per-micro-batch losses into slots [pipeline * C, (pipeline + 1) * C) of a
// zero vector of num_pipelines * C + extra doubles.
at::Tensor loss_slots(const RankLosses& losses, int pipeline, int num_microbatches,
                      int num_pipelines, int extra) {
  at::Tensor slots = at::zeros({num_pipelines * num_microbatches + extra}, at::kDouble);
  double* data = slots.data_ptr<double>();
  for (std::size_t i = 0; i < losses.microbatches.size(); ++i) {
    data[pipeline * num_microbatches + losses.microbatches[i]] = losses.values.at(i);
  }
  return slots;
}

// Data-parallel replica `dp_rank`'s share of an EP pipeline's windows: sequences
// [dp_rank * mbs/dp, (dp_rank + 1) * mbs/dp) of each of its C micro-batches of mbs sequences, so
// every micro-batch (and the schedule) keeps its place whatever dp is.
at::Tensor replica_share(const at::Tensor& windows, int num_microbatches, int dp, int dp_rank) {
  if (dp == 1) return windows;
  const int64_t rows = windows.size(0) / num_microbatches;
  const int64_t share = rows / dp;
  return windows.view({num_microbatches, rows, windows.size(1)})
      .narrow(1, dp_rank * share, share)
      .reshape({num_microbatches * share, windows.size(1)});
}

double ordered_sum(const at::Tensor& slots, int64_t count) {
  const double* data = slots.data_ptr<double>();
  double sum = 0.0;
  for (int64_t i = 0; i < count; ++i) sum += data[i];
  return sum;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// One rank's training run. The constructor sets the rank up; run() trains, evaluates and
// checkpoints, and on world rank 0 (the leader) writes the run folder's shared files and prints.
// NOTE: every method that communicates is called by every rank, in the same order; decisions
// (stop, evaluate, checkpoint) come from values every rank holds after the step's allreduce.
class Trainer {
 public:
  // Checks the config against the world, connects the process grid (collective) and builds this
  // rank's model stages, optimiser, pipeline, expert balancer and data.
  Trainer(const TrainConfig& config, runtime::DistributedContext& context,
          const RunControl& control);

  // Trains from step 0 or (control.resume) the latest checkpoint up to config.steps; see
  // train_rank.
  RunResult run();

 private:
  void resume();
  void check_checkpoint_fits(const Manifest& manifest) const;
  // Loads a checkpoint written with another DP size or ZeRO stage: the weights, the optimiser
  // state reassembled from the saved DP group's files and cut into this layout, the EPLB counts.
  void reshard_from(const Manifest& manifest, int saved_dp, bool saved_sharded);
  void start_run_folder();  // leader
  void evaluate_before_training();
  // One optimiser step; the run's result when the run ends at it, nullopt to go on.
  std::optional<RunResult> train_step(int step);
  // Forward and backward of `step` and the gradient sums over copies; returns the step's losses
  // summed over all ranks (collective): ep * C per-micro-batch losses, then the stop flag.
  at::Tensor forward_backward(int step);
  // The message that stops the run when one of the step's summed losses is not finite.
  std::optional<std::string> nonfinite_loss_message(int step, const at::Tensor& slots) const;
  void update_weights(int step);
  // Sums the gradients over the DP group (replicated optimiser state only; ShardedAdamW sums its
  // own). Collective over the DP group.
  void sum_gradients_over_replicas();
  // This rank's optimiser-state bytes and every rank's (collective), for the header line.
  void measure_optimizer_state();
  int64_t optimizer_state_bytes() const;
  nlohmann::json checkpoint_layout() const;
  void rebalance_experts(int step);
  void record_step(int step, double loss, double step_seconds, bool stopping);
  double evaluate();
  void save_checkpoint(int step);
  Manifest checkpoint_manifest(int step, const std::vector<FileDigest>& digests) const;
  // Every rank's digest, from each rank's own (collective).
  std::vector<FileDigest> gather_digests(const FileDigest& mine);
  void barrier();
  // Leader, after the last step: pictures, summary.json and the printed summary.
  void summarise();
  void write_loss_curve(const std::vector<StepMetrics>& rows) const;
  nlohmann::json summary_json(const std::vector<StepMetrics>& rows) const;
  void print_summary(const std::vector<StepMetrics>& rows);
  void print_pipeline_report(nlohmann::json& summary);

  const TrainConfig config_;
  runtime::DistributedContext& context_;
  const RunControl& control_;
  std::ostream& out_;
  const int world_size_;
  const std::chrono::milliseconds timeout_;
  runtime::ProcessGrid grid_;
  const int rank_;            // in the pipeline
  const int ep_rank_;         // which EP pipeline
  const int dp_rank_;         // which data-parallel replica
  const int pipeline_index_;  // dp_rank * ep + ep_rank: this pipeline's loss slots
  const bool leader_;
  const int num_microbatches_;
  const schedule::Schedule schedule_;
  // NOTE: a rank's stages share one CommStream even without EP: the MoE overlap hook pairs
  // stages on the same stream.
  const std::shared_ptr<moe::CommStream> stream_;
  TrainableModel model_;
  // ZeRO-1 (config.sharded_optimizer()): the AdamW state of model_.parameters, sharded over the
  // DP group; model_.optimizer then holds none.
  std::optional<ShardedAdamW> zero_;
  runtime::Pipeline pipeline_;
  ExpertBalancer balancer_;
  TrainingData data_;
  const int64_t tokens_per_step_;
  const runtime::Criterion criterion_;
  const runtime::Criterion eval_criterion_;
  const RankBatch eval_batch_;
  const std::string config_hash_;

  int start_step_ = 0;
  std::optional<double> initial_held_out_;
  int steps_done_ = 0;
  int trace_step_ = 0;
  std::optional<PipelineReport> report_;
  int rebalances_ = 0;
  std::optional<RebalanceReport> last_rebalance_;
  std::optional<MetricsWriter> metrics_;  // leader only
  std::vector<int64_t> state_bytes_;      // every rank's optimiser-state bytes
  std::string progress_tag_;              // "PP2xEP1xDP2 ZeRO-1 opt 12.5 KiB/rank (max)"
  Clock::time_point run_start_;
  double trained_seconds_ = 0.0;
};

}  // namespace

Trainer::Trainer(const TrainConfig& config, runtime::DistributedContext& context,
                 const RunControl& control)
    : config_(config),
      context_(context),
      control_(control),
      out_(control.out ? *control.out : std::cout),
      world_size_(checked_world_size(config, context)),
      timeout_(context.options.timeout),
      grid_(connected_grid(config, context, world_size_)),
      rank_(grid_.pp_rank()),
      ep_rank_(grid_.ep_rank()),
      dp_rank_(grid_.dp_rank()),
      pipeline_index_(grid_.dp_rank() * config.ep + grid_.ep_rank()),
      leader_(context.env.rank == 0),
      num_microbatches_(config.num_microbatches),
      schedule_(schedule::build_schedule(config.schedule, config.num_ranks, num_microbatches_,
                                         {config.stages_per_rank})),
      stream_(std::make_shared<moe::CommStream>(
          config.ep > 1 ? grid_.ep_group() : runtime::CommunicatorPtr(),
          moe::CommStreamOptions{nullptr, false, grid_.ep_members()})),
      model_(build_trainable_model(config, stages_of_rank(config, rank_), stream_,
                                   !config.sharded_optimizer())),
      pipeline_(config.schedule, as_modules(model_.stages), grid_.pipeline_group(),
                traced_pipeline_options(config, grid_, timeout_)),
      balancer_(config, local_layers(config, model_), context.world, grid_.ep_group(), timeout_,
                runtime::world_members(context), grid_.ep_members()),
      data_(load_training_data(config)),
      tokens_per_step_(static_cast<int64_t>(config.ep) * num_microbatches_ *
                       config.microbatch_size * config.seq_len),
      criterion_(moe::language_model_criterion(static_cast<double>(tokens_per_step_))),
      eval_criterion_(moe::language_model_criterion(
          static_cast<double>(data_.held_out.size(0) * config.seq_len * config.ep))),
      eval_batch_(rank_batch(schedule_, rank_, data_.held_out)),
      config_hash_(config_hash(config)) {
  if (config.sharded_optimizer()) {
    zero_.emplace(model_.parameter_names, model_.parameters, adamw_options(config),
                  grid_.dp_group(), timeout_, grid_.dp_members());
  }
}

RunResult Trainer::run() {
  if (control_.resume) resume();
  measure_optimizer_state();
  if (leader_) start_run_folder();
  if (leader_) metrics_.emplace(config_.run_dir, start_step_);
  if (!initial_held_out_) evaluate_before_training();
  steps_done_ = start_step_;
  trace_step_ = start_step_ + std::min(10, config_.steps - start_step_);
  run_start_ = Clock::now();
  for (int step = start_step_ + 1; step <= config_.steps; ++step) {
    if (std::optional<RunResult> ended = train_step(step)) return *ended;
  }
  if (leader_) summarise();
  RunResult result;
  result.step = steps_done_;
  return result;
}

void Trainer::resume() {
  const Manifest manifest = read_latest_checkpoint(config_.run_dir);
  check_checkpoint_fits(manifest);
  const int saved_dp = manifest.layout.value("dp", 1);
  const bool saved_sharded = manifest.layout.value("zero", 0) == 1;
  if (saved_dp == config_.dp && saved_sharded == config_.sharded_optimizer()) {
    const NamedTensors tensors = load_rank_file(config_.run_dir, manifest, context_.env.rank);
    for (std::size_t slot = 0; slot < model_.stages.size(); ++slot) {
      load_stage_state(*model_.stages[slot], model_.stage_of_slot[slot], tensors);
    }
    if (zero_) {
      zero_->load_state(tensors, "opt.");
    } else {
      model_.optimizer.load_state(tensors, "opt.");
    }
    balancer_.load_counts(tensors);
  } else {
    reshard_from(manifest, saved_dp, saved_sharded);
  }
  if (!manifest.expert_placement.empty()) balancer_.restore_placement(manifest.expert_placement);
  data_.loader.set_position(manifest.data_position);
  start_step_ = manifest.step;
  if (manifest.config.contains("initial_held_out_loss")) {
    initial_held_out_ = manifest.config["initial_held_out_loss"].get<double>();
  }
}

void Trainer::reshard_from(const Manifest& manifest, int saved_dp, bool saved_sharded) {
  // The files of the saved DP group at this rank's (pp, ep) position, by saved DP rank: they
  // hold the same stages (the grid's PP and EP are part of the config hash).
  std::vector<NamedTensors> files;
  for (int d = 0; d < saved_dp; ++d) {
    const int rank = (d * config_.ep + ep_rank_) * config_.num_ranks + rank_;
    files.push_back(load_rank_file(config_.run_dir, manifest, rank));
  }
  for (std::size_t slot = 0; slot < model_.stages.size(); ++slot) {
    load_stage_state(*model_.stages[slot], model_.stage_of_slot[slot], files[0]);
  }
  std::vector<std::vector<at::Tensor>> moments;
  if (saved_sharded) {
    moments = ShardedAdamW::moments_from_shards(model_.parameters, files, "opt.");
  } else {
    for (const std::string& name : model_.parameter_names) {
      auto m = files[0].find("opt." + name + ".exp_avg");
      auto v = files[0].find("opt." + name + ".exp_avg_sq");
      if (m == files[0].end() || v == files[0].end()) {
        throw std::invalid_argument("checkpoint rank file lacks the AdamW moments of " + name);
      }
      moments.push_back({m->second, v->second});
    }
  }
  auto step = files[0].find("opt.step");
  if (step == files[0].end()) throw std::invalid_argument("checkpoint rank file lacks opt.step");
  if (zero_) {
    zero_->set_state(moments, step->second.item<int64_t>());
  } else {
    model_.optimizer.set_state(moments, step->second.item<int64_t>());
  }
  // NOTE: the token counts of the open EPLB window are summed over every rank before a
  // rebalance; DP replica 0 takes the saved group's sum, the others start from zero, so the
  // sums stay what they were.
  NamedTensors counts;
  if (dp_rank_ == 0) {
    for (const NamedTensors& file : files) {
      for (const auto& [key, tensor] : file) {
        if (key.rfind("eplb.", 0) != 0) continue;
        auto [it, inserted] = counts.emplace(key, tensor.clone());
        if (!inserted) it->second.add_(tensor);
      }
    }
  }
  balancer_.load_counts(counts);
  if (leader_) {
    out_ << "resharding the optimiser state of the checkpoint from "
         << describe_grid(config_.num_ranks, config_.ep, saved_dp, saved_sharded) << " to "
         << describe_grid(config_.num_ranks, config_.ep, config_.dp, config_.sharded_optimizer())
         << "\n"
         << std::flush;
  }
}

void Trainer::check_checkpoint_fits(const Manifest& manifest) const {
  if (manifest.config_hash != config_hash_) {
    throw std::invalid_argument("checkpoint in " + config_.run_dir + " was made with config hash " +
                                manifest.config_hash + ", this run has " + config_hash_ +
                                " (model, batch, optimiser, seed and data must not change)");
  }
  // NOTE: the config hash covers PP and EP; DP and the ZeRO stage may change (resume reshards).
  const int saved_world = config_.num_ranks * config_.ep * manifest.layout.value("dp", 1);
  if (manifest.num_ranks != saved_world || static_cast<int>(manifest.files.size()) != saved_world) {
    throw std::invalid_argument(
        "checkpoint has " + std::to_string(manifest.num_ranks) + " ranks and " +
        std::to_string(manifest.files.size()) + " rank files; its layout " +
        describe_grid(manifest.layout.value("pp", config_.num_ranks),
                      manifest.layout.value("ep", config_.ep), manifest.layout.value("dp", 1),
                      manifest.layout.value("zero", 0) == 1) +
        " needs " + std::to_string(saved_world));
  }
}

void Trainer::start_run_folder() {
  fs::create_directories(config_.run_dir);
  if (!control_.resume)
    write_file_atomic((fs::path(config_.run_dir) / "config.json").string(),
                      to_json(config_).dump(2) + "\n");
  const auto [low, high] = std::minmax_element(state_bytes_.begin(), state_bytes_.end());
  out_ << "dualpipe train: " << config_.schedule << " on "
       << describe_grid(config_.num_ranks, config_.ep, config_.dp, config_.sharded_optimizer())
       << "; optimiser state " << *low << "-" << *high << " bytes per rank; " << config_.num_layers
       << " MoE layers (hidden " << config_.hidden_size << ", " << config_.num_experts
       << " experts, top-" << config_.top_k << "), " << num_microbatches_ << " micro-batches x "
       << config_.microbatch_size << " x " << config_.seq_len << " bytes per step"
       << (config_.eplb_interval > 0
               ? "; EPLB every " + std::to_string(config_.eplb_interval) + " steps over " +
                     std::to_string(config_.num_physical_experts()) + " physical experts"
               : std::string())
       << "; data " << (config_.data.empty() ? kDefaultCorpusPath : config_.data) << " ("
       << data_.split.train.size() << " train / " << data_.split.held_out.size()
       << " held-out bytes); run folder " << config_.run_dir << "\n";
  if (control_.resume) out_ << "resuming from the checkpoint of step " << start_step_ << "\n";
  out_.flush();
}

void Trainer::evaluate_before_training() {
  initial_held_out_ = evaluate();
  if (!leader_) return;
  char line[128];
  std::snprintf(line, sizeof(line), "held-out loss before training %.4f (unigram %.4f)\n",
                *initial_held_out_, data_.unigram_loss);
  out_ << line << std::flush;
}

std::optional<RunResult> Trainer::train_step(int step) {
  const auto step_start = Clock::now();
  const at::Tensor slots = forward_backward(step);
  if (std::optional<std::string> message = nonfinite_loss_message(step, slots)) {
    if (leader_) out_ << "dualpipe train: " << *message << "\n" << std::flush;
    RunResult result;
    result.outcome = RunOutcome::kNonFinite;
    result.step = steps_done_;
    result.message = *message;
    return result;
  }
  const int num_losses = config_.ep * config_.dp * num_microbatches_;
  const double loss = ordered_sum(slots, num_losses);
  update_weights(step);
  const double step_seconds = seconds_since(step_start);
  trained_seconds_ += step_seconds;
  steps_done_ = step;
  const bool stopping = slots.data_ptr<double>()[num_losses] > 0.0;
  record_step(step, loss, step_seconds, stopping);
  if (step % config_.checkpoint_interval == 0 || step == config_.steps || stopping) {
    save_checkpoint(step);
  }
  if (!stopping) return std::nullopt;
  if (leader_) {
    out_ << "dualpipe train: stopped at step " << step << " on request; checkpoint written. "
         << "Resume with: dualpipe train --resume " << config_.run_dir << "\n"
         << std::flush;
  }
  RunResult result;
  result.outcome = RunOutcome::kStopped;
  result.step = step;
  return result;
}

at::Tensor Trainer::forward_backward(int step) {
  const int C = num_microbatches_;
  const at::Tensor windows =
      data_.loader.next(static_cast<int64_t>(config_.ep) * C * config_.microbatch_size);
  const at::Tensor mine = replica_share(
      windows.narrow(0, ep_rank_ * C * config_.microbatch_size, C * config_.microbatch_size), C,
      config_.dp, dp_rank_);
  const RankBatch batch = rank_batch(schedule_, rank_, mine);
  const runtime::StepResult result =
      pipeline_.step(list_of_defined(batch.inputs), C, criterion_, list_of_defined(batch.labels));
  if (step == trace_step_) {
    report_ = gather_pipeline_report(context_, pipeline_.executor().trace().events(),
                                     pipeline_.executor().activation_peak(), peak_rss_mib(), step);
  }
  sync_ep_gradients(model_.stages, grid_.ep_group(), grid_.ep_members(), timeout_);
  balancer_.sum_replica_gradients();
  RankLosses losses = rank_losses(result.loss, batch.loss_microbatches);
  if (control_.step_hook) {
    control_.step_hook->before_loss_check(step, losses.microbatches, losses.values);
  }
  at::Tensor slots = loss_slots(losses, pipeline_index_, C, config_.ep * config_.dp, 1);
  const bool stop_here = control_.stop_requested && *control_.stop_requested != 0;
  slots[slots.numel() - 1] = stop_here ? 1.0 : 0.0;
  allreduce_sum(context_.world, runtime::world_members(context_), slots,
                "step " + std::to_string(step) + "'s losses", timeout_);
  return slots;
}

std::optional<std::string> Trainer::nonfinite_loss_message(int step,
                                                           const at::Tensor& slots) const {
  const int C = num_microbatches_;
  const double* values = slots.data_ptr<double>();
  for (int i = 0; i < config_.ep * config_.dp * C; ++i) {
    if (std::isfinite(values[i])) continue;
    const int ep = (i / C) % config_.ep, dp = i / C / config_.ep;
    return "non-finite loss (" + std::to_string(values[i]) + ") at step " + std::to_string(step) +
           ", micro-batch " + std::to_string(i % C) +
           (config_.ep > 1 ? " of EP pipeline " + std::to_string(ep) : "") +
           (config_.dp > 1 ? " of DP replica " + std::to_string(dp) : "") +
           "; the run stops without updating the weights, its last good checkpoint is step " +
           std::to_string(
               has_checkpoint(config_.run_dir) ? read_latest_checkpoint(config_.run_dir).step : 0);
  }
  return std::nullopt;
}

void Trainer::update_weights(int step) {
  const double lr =
      learning_rate_at(step, config_.steps, config_.warmup_steps, config_.learning_rate);
  if (zero_) {
    zero_->step(lr);
    zero_->zero_grad();
  } else {
    sum_gradients_over_replicas();
    model_.optimizer.step(lr);
    model_.optimizer.zero_grad();
  }
  if (balancer_.due(step)) rebalance_experts(step);
}

void Trainer::sum_gradients_over_replicas() {
  const runtime::CommunicatorPtr& group = grid_.dp_group();
  if (!group || group->getSize() == 1) return;
  // NOTE: a sum, not a mean: every replica's criterion already divides by the tokens of the
  // whole global batch.
  runtime::reduce_gradients(model_.parameters, [&](std::vector<at::Tensor>& buckets) {
    for (at::Tensor& bucket : buckets) {
      allreduce_sum(group, grid_.dp_members(), bucket, "gradients over DP replicas", timeout_);
    }
  });
}

int64_t Trainer::optimizer_state_bytes() const {
  return zero_ ? zero_->state_bytes() : model_.optimizer.state_bytes();
}

void Trainer::measure_optimizer_state() {
  at::Tensor slots = at::zeros({world_size_}, at::kLong);
  slots[context_.env.rank] = optimizer_state_bytes();
  allreduce_sum(context_.world, runtime::world_members(context_), slots, "optimizer state sizes",
                timeout_);
  state_bytes_.assign(slots.data_ptr<int64_t>(), slots.data_ptr<int64_t>() + world_size_);
  char tag[128];
  std::snprintf(
      tag, sizeof(tag), "PP%dxEP%dxDP%d%s opt %.1f KiB/rank (max)", config_.num_ranks, config_.ep,
      config_.dp, config_.sharded_optimizer() ? " ZeRO-1" : "",
      static_cast<double>(*std::max_element(state_bytes_.begin(), state_bytes_.end())) / 1024.0);
  progress_tag_ = tag;
}

void Trainer::rebalance_experts(int step) {
  // NOTE: with ZeRO-1 every rank assembles its parameters' whole moments for the move (a
  // transient copy of the replicated state) and keeps its shard of them afterwards.
  std::vector<std::vector<at::Tensor>> gathered;
  std::unordered_map<const void*, std::size_t> index_of;
  if (zero_) {
    gathered = zero_->gather_moments();
    for (std::size_t i = 0; i < model_.parameters.size(); ++i) {
      index_of[model_.parameters[i].unsafeGetTensorImpl()] = i;
    }
  }
  const moe::CompanionTensors moments = [&](const at::Tensor& p) {
    if (!zero_) return model_.optimizer.state_of(p);
    auto it = index_of.find(p.unsafeGetTensorImpl());
    DUALPIPE_ASSERT(it != index_of.end(), "EPLB moved a tensor the optimiser does not update");
    return gathered[it->second];
  };
  const RebalanceReport r = balancer_.rebalance(moments);
  if (zero_) zero_->scatter_moments(gathered);
  ++rebalances_;
  last_rebalance_ = r;
  if (!leader_) return;
  char line[256];
  std::snprintf(line, sizeof(line),
                "step %d: EPLB rebalanced from %.0f expert choices (tokens x top-k, all "
                "layers): %d of %d layers changed placement; per-GPU token imbalance "
                "(max/mean) %.3f -> %.3f\n",
                step, r.assignments, r.layers_changed, config_.num_layers, r.imbalance_before,
                r.imbalance_after);
  out_ << line << std::flush;
}

// Evaluates when due (collective), then the leader writes the metrics row and prints progress.
void Trainer::record_step(int step, double loss, double step_seconds, bool stopping) {
  const bool last = step == config_.steps;
  StepMetrics row;
  row.step = step;
  row.loss = loss;
  row.step_seconds = step_seconds;
  row.tokens_per_second = static_cast<double>(tokens_per_step_) / step_seconds;
  if (step % config_.eval_interval == 0 || last || stopping) row.held_out_loss = evaluate();
  if (!leader_) return;
  metrics_->write(row);
  const int done = step - start_step_;
  if (step <= start_step_ + 3 || step % 10 == 0 || row.held_out_loss || last) {
    const double eta = trained_seconds_ / done * (config_.steps - step);
    out_ << format_progress(row, config_.steps, eta) << "  " << progress_tag_ << "\n" << std::flush;
  }
}

// The held-out loss, summed over the micro-batches of every EP pipeline. Collective.
double Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  const runtime::StepResult result =
      pipeline_.step(list_of_defined(eval_batch_.inputs), num_microbatches_, eval_criterion_,
                     list_of_defined(eval_batch_.labels));
  at::Tensor slots = loss_slots(rank_losses(result.loss, eval_batch_.loss_microbatches), ep_rank_,
                                num_microbatches_, config_.ep, 0);
  // NOTE: every replica evaluates the whole held-out set (a replica cannot skip the step's
  // collectives cheaply); replica 0's losses are the result.
  if (dp_rank_ != 0) slots.zero_();
  allreduce_sum(context_.world, runtime::world_members(context_), slots, "held-out losses",
                timeout_);
  return ordered_sum(slots, slots.numel());
}

void Trainer::save_checkpoint(int step) {
  NamedTensors tensors = model_state(model_);
  if (zero_) {
    zero_->save_state(tensors, "opt.");
  } else {
    model_.optimizer.save_state(tensors, "opt.");
  }
  balancer_.save_counts(tensors);
  const FileDigest digest = save_tensors(
      (fs::path(config_.run_dir) / rank_file_name(step, context_.env.rank)).string(), tensors);
  // NOTE: also the barrier that puts every rank's file on disk before the manifest names it.
  const std::vector<FileDigest> digests = gather_digests(digest);
  if (leader_) commit_checkpoint(config_.run_dir, checkpoint_manifest(step, digests));
  barrier();
}

std::vector<FileDigest> Trainer::gather_digests(const FileDigest& mine) {
  // A sum of one non-zero slot per rank moves each rank's two 64-bit words exactly.
  at::Tensor slots = at::zeros({2 * world_size_}, at::kLong);
  int64_t* data = slots.data_ptr<int64_t>();
  data[2 * context_.env.rank] = static_cast<int64_t>(mine.bytes);
  std::memcpy(&data[2 * context_.env.rank + 1], &mine.fnv1a64, sizeof(int64_t));
  allreduce_sum(context_.world, runtime::world_members(context_), slots, "checkpoint digests",
                timeout_);
  std::vector<FileDigest> digests(static_cast<std::size_t>(world_size_));
  for (int r = 0; r < world_size_; ++r) {
    digests[r].bytes = static_cast<std::uint64_t>(data[2 * r]);
    std::memcpy(&digests[r].fnv1a64, &data[2 * r + 1], sizeof(int64_t));
  }
  return digests;
}

Manifest Trainer::checkpoint_manifest(int step, const std::vector<FileDigest>& digests) const {
  Manifest m;
  m.step = step;
  m.num_ranks = world_size_;
  m.schedule = config_.schedule;
  m.config_hash = config_hash_;
  m.dir = checkpoint_dir_name(step);
  for (int r = 0; r < world_size_; ++r) m.files.push_back(rank_file_name(step, r));
  m.file_digests = digests;
  m.data_position = data_.loader.position();
  m.data_seed = data_.loader.seed();
  m.config = to_json(config_);
  m.expert_placement = balancer_.placement();
  m.layout = checkpoint_layout();
  if (initial_held_out_) m.config["initial_held_out_loss"] = *initial_held_out_;
  return m;
}

nlohmann::json Trainer::checkpoint_layout() const {
  nlohmann::json layout{{"pp", config_.num_ranks},
                        {"ep", config_.ep},
                        {"dp", config_.dp},
                        {"zero", config_.sharded_optimizer() ? 1 : 0},
                        {"rank_order", "rank = (dp_rank * EP + ep_rank) * PP + pp_rank"},
                        {"optimizer_state_bytes", state_bytes_}};
  if (zero_) {
    layout["optimizer"] =
        "rank file r holds the AdamW moments of DP shard dp_rank(r) of its stages' flat "
        "parameter buffer per dtype (opt.zero.<bucket>.exp_avg / .exp_avg_sq); shard d is "
        "[d * ceil(numel / DP), min((d + 1) * ceil(numel / DP), numel))";
    layout["leader_shard"] = zero_->layout();
  } else {
    layout["optimizer"] = "every rank file holds the whole AdamW moments of its stages";
  }
  return layout;
}

void Trainer::barrier() {
  at::Tensor t = at::zeros({1});
  allreduce_sum(context_.world, runtime::world_members(context_), t, "a barrier", timeout_);
}

void Trainer::summarise() {
  const std::vector<StepMetrics> rows = read_metrics(config_.run_dir);
  write_loss_curve(rows);
  nlohmann::json summary = summary_json(rows);
  print_summary(rows);
  if (report_) print_pipeline_report(summary);
  write_file_atomic((fs::path(config_.run_dir) / "summary.json").string(), summary.dump(2) + "\n");
  out_ << "run folder " << config_.run_dir
       << ": metrics.csv, metrics.jsonl, loss_curve.svg, timeline.svg, trace.json, "
          "summary.json, checkpoints\n"
       << std::flush;
}

void Trainer::write_loss_curve(const std::vector<StepMetrics>& rows) const {
  std::vector<CurvePoint> train_curve, held_out_curve;
  held_out_curve.push_back({0.0, *initial_held_out_});
  for (const StepMetrics& m : rows) {
    train_curve.push_back({static_cast<double>(m.step), m.loss});
    if (m.held_out_loss) held_out_curve.push_back({static_cast<double>(m.step), *m.held_out_loss});
  }
  write_file_atomic((fs::path(config_.run_dir) / "loss_curve.svg").string(),
                    loss_curve_svg(train_curve, held_out_curve, data_.unigram_loss,
                                   "byte-level MoE, " + config_.schedule + " on " +
                                       std::to_string(config_.num_ranks) + " ranks"));
}

nlohmann::json Trainer::summary_json(const std::vector<StepMetrics>& rows) const {
  nlohmann::json summary;
  summary["steps"] = steps_done_;
  summary["seconds"] = seconds_since(run_start_);
  summary["unigram_loss"] = data_.unigram_loss;
  summary["held_out_loss_start"] = *initial_held_out_;
  summary["grid"] = {{"pp", config_.num_ranks},
                     {"ep", config_.ep},
                     {"dp", config_.dp},
                     {"zero", config_.sharded_optimizer() ? 1 : 0}};
  summary["optimizer_state_bytes_per_rank"] = state_bytes_;
  if (config_.eplb_interval > 0) {
    summary["eplb"]["rebalances"] = rebalances_;
    summary["eplb"]["expert_placement"] = balancer_.placement();
    if (last_rebalance_) {
      summary["eplb"]["last_imbalance_before"] = last_rebalance_->imbalance_before;
      summary["eplb"]["last_imbalance_after"] = last_rebalance_->imbalance_after;
      summary["eplb"]["last_layers_changed"] = last_rebalance_->layers_changed;
    }
  }
  if (!rows.empty()) {
    summary["train_loss_start"] = rows.front().loss;
    summary["train_loss_end"] = rows.back().loss;
    if (rows.back().held_out_loss) summary["held_out_loss_end"] = *rows.back().held_out_loss;
  }
  return summary;
}

void Trainer::print_summary(const std::vector<StepMetrics>& rows) {
  out_ << "\nsummary after " << steps_done_ << " steps ("
       << format_duration(seconds_since(run_start_)) << " this run):\n";
  char line[256];
  if (!rows.empty()) {
    std::snprintf(line, sizeof(line), "  train loss     %.4f -> %.4f\n", rows.front().loss,
                  rows.back().loss);
    out_ << line;
    std::snprintf(line, sizeof(line), "  held-out loss  %.4f -> %.4f\n", *initial_held_out_,
                  rows.back().held_out_loss.value_or(NAN));
    out_ << line;
  }
  std::snprintf(line, sizeof(line),
                "  unigram loss   %.4f (entropy of the training bytes, nats/byte)\n",
                data_.unigram_loss);
  out_ << line;
  const auto [low, high] = std::minmax_element(state_bytes_.begin(), state_bytes_.end());
  out_ << "  grid           "
       << describe_grid(config_.num_ranks, config_.ep, config_.dp, config_.sharded_optimizer())
       << "; optimiser state " << *low << "-" << *high << " bytes per rank\n";
  if (last_rebalance_) {
    std::snprintf(line, sizeof(line),
                  "  EPLB           %d rebalances; the last: per-GPU token imbalance %.3f -> "
                  "%.3f, %d of %d layers moved\n",
                  rebalances_, last_rebalance_->imbalance_before, last_rebalance_->imbalance_after,
                  last_rebalance_->layers_changed, config_.num_layers);
    out_ << line;
  }
}

// Writes trace.json and timeline.svg, prints the per-rank table (with a note when ranks
// outnumber cores) and adds it to `summary`.
void Trainer::print_pipeline_report(nlohmann::json& summary) {
  write_pipeline_report(*report_, schedule_, config_.run_dir, out_, summary);
}

RunResult train_rank(const TrainConfig& config, runtime::DistributedContext& context,
                     const RunControl& control) {
  Trainer trainer(config, context, control);
  return trainer.run();
}

}  // namespace dualpipe::train

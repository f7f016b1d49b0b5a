#include "dualpipe/train/trainer.h"

#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

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
#include "dualpipe/train/training_data.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// This rank's model stages, one per placement slot, with the model stage each one is.
struct RankModel {
  std::vector<runtime::StagePtr> modules;
  std::vector<std::shared_ptr<moe::MoEStage>> stages;
  std::vector<int> stage_of_slot;
};

RankModel build_rank_model(const TrainConfig& config, int rank,
                           const std::shared_ptr<moe::CommStream>& stream) {
  RankModel model;
  for (const schedule::StageId& id :
       runtime::Pipeline::stages_for(config.schedule, config.num_ranks, rank)) {
    // NOTE: DualPipe's (1, s) is a second copy of model stage s, so the stage number alone names
    // the weights in every schedule.
    const int stage = id.stage;
    auto module = build_stage(config, stage, stream);
    model.stages.push_back(module);
    model.modules.push_back(module);
    model.stage_of_slot.push_back(stage);
  }
  return model;
}

// Every MoE layer module of this rank with its index in the model.
std::vector<LocalLayer> local_layers(const TrainConfig& config, const RankModel& model) {
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

void allreduce_sum(const runtime::CommunicatorPtr& comm, at::Tensor& tensor,
                   std::chrono::milliseconds timeout) {
  if (!comm || comm->getSize() == 1) return;
  std::vector<at::Tensor> tensors = {tensor};
  comm->allreduce(tensors)->wait(timeout);
}

// Sums the gradients of the parameters every EP rank holds a replica of (all but the routed
// experts, which each EP rank holds a shard of) over the EP group: each EP pipeline saw its own
// part of the batch.
void sync_ep_gradients(RankModel& model, const runtime::CommunicatorPtr& ep_group,
                       std::chrono::milliseconds timeout) {
  if (!ep_group || ep_group->getSize() == 1) return;
  std::vector<at::Tensor> replicated;
  for (auto& stage : model.stages) {
    for (auto& item : stage->named_parameters()) {
      if (item.key().find(".experts.") == std::string::npos) replicated.push_back(item.value());
    }
  }
  runtime::reduce_gradients(replicated, [&](std::vector<at::Tensor>& buckets) {
    for (at::Tensor& bucket : buckets) allreduce_sum(ep_group, bucket, timeout);
  });
}

// Scatters this rank's per-micro-batch losses into slots [ep_rank * C, (ep_rank + 1) * C) of a
// zero vector of ep * C + extra doubles.
at::Tensor loss_slots(const at::Tensor& loss, const std::vector<int>& microbatches, int ep_rank,
                      int num_microbatches, int ep, int extra) {
  at::Tensor slots = at::zeros({ep * num_microbatches + extra}, at::kDouble);
  if (loss.defined()) {
    const at::Tensor values = loss.to(at::kDouble).contiguous();
    for (std::size_t i = 0; i < microbatches.size(); ++i) {
      slots[ep_rank * num_microbatches + microbatches[i]] = values[static_cast<int64_t>(i)];
    }
  }
  return slots;
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

}  // namespace

RunResult train_rank(const TrainConfig& config, runtime::DistributedContext& context,
                     const RunControl& control) {
  config.validate();
  std::ostream& out = control.out ? *control.out : std::cout;
  const int world_size = context.world ? context.world->getSize() : 1;
  if (world_size != config.num_ranks * config.ep) {
    throw std::invalid_argument(
        "training needs num_ranks * ep = " + std::to_string(config.num_ranks) + " * " +
        std::to_string(config.ep) + " processes, got a world of " + std::to_string(world_size));
  }
  const std::chrono::milliseconds timeout = context.options.timeout;
  runtime::ProcessGrid grid({config.num_ranks, config.ep, 1}, context.env.rank, world_size);
  grid.connect(context.store, context.options, "train");
  const int rank = grid.pp_rank();
  const int ep_rank = grid.ep_rank();
  const bool leader = context.env.rank == 0;
  const int C = config.num_microbatches;

  const schedule::Schedule schedule =
      schedule::build_schedule(config.schedule, config.num_ranks, C);
  // NOTE: a rank's stages share one CommStream even without EP: the MoE overlap hook pairs
  // stages on the same stream.
  auto stream = std::make_shared<moe::CommStream>(config.ep > 1 ? grid.ep_group()
                                                                : runtime::CommunicatorPtr());
  RankModel model = build_rank_model(config, rank, stream);
  runtime::PipelineOptions pipeline_options;
  pipeline_options.timeout = timeout;
  pipeline_options.trace = true;
  runtime::Pipeline pipeline(config.schedule, model.modules, grid.pipeline_group(),
                             pipeline_options);

  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  for (std::size_t slot = 0; slot < model.stages.size(); ++slot) {
    for (auto& item : model.stages[slot]->named_parameters()) {
      names.push_back(stage_prefix(model.stage_of_slot[slot]) + item.key());
      params.push_back(item.value());
    }
  }
  AdamWOptions adam;
  adam.weight_decay = config.weight_decay;
  AdamW optimizer(names, params, adam);
  ExpertBalancer balancer(config, local_layers(config, model), context.world, grid.ep_group(),
                          timeout);
  const moe::CompanionTensors moments = [&optimizer](const at::Tensor& p) {
    return optimizer.state_of(p);
  };
  int rebalances = 0;
  std::optional<RebalanceReport> last_rebalance;

  TrainingData data = load_training_data(config);
  const int64_t tokens_per_step =
      static_cast<int64_t>(config.ep) * C * config.microbatch_size * config.seq_len;
  const runtime::Criterion criterion =
      moe::language_model_criterion(static_cast<double>(tokens_per_step));
  const int64_t eval_rows = data.held_out.size(0);
  const runtime::Criterion eval_criterion =
      moe::language_model_criterion(static_cast<double>(eval_rows * config.seq_len * config.ep));
  const RankBatch eval_batch = rank_batch(schedule, rank, data.held_out);

  // --- Resume. ---
  int start_step = 0;
  std::optional<double> initial_held_out;
  const std::string hash = config_hash(config);
  if (control.resume) {
    const Manifest manifest = read_latest_checkpoint(config.run_dir);
    if (manifest.config_hash != hash) {
      throw std::invalid_argument(
          "checkpoint in " + config.run_dir + " was made with config hash " + manifest.config_hash +
          ", this run has " + hash + " (model, batch, optimiser, seed and data must not change)");
    }
    if (manifest.num_ranks != world_size || static_cast<int>(manifest.files.size()) != world_size) {
      throw std::invalid_argument("checkpoint has " + std::to_string(manifest.num_ranks) +
                                  " rank files, this run has " + std::to_string(world_size) +
                                  " ranks");
    }
    const NamedTensors tensors =
        load_tensors((fs::path(config.run_dir) / manifest.files[context.env.rank]).string());
    for (std::size_t slot = 0; slot < model.stages.size(); ++slot) {
      load_stage_state(*model.stages[slot], model.stage_of_slot[slot], tensors);
    }
    optimizer.load_state(tensors, "opt.");
    if (!manifest.expert_placement.empty()) balancer.restore_placement(manifest.expert_placement);
    balancer.load_counts(tensors);
    data.loader.set_position(manifest.data_position);
    start_step = manifest.step;
    if (manifest.config.contains("initial_held_out_loss")) {
      initial_held_out = manifest.config["initial_held_out_loss"].get<double>();
    }
  }

  auto barrier = [&] {
    at::Tensor t = at::zeros({1});
    allreduce_sum(context.world, t, timeout);
  };

  auto evaluate = [&]() -> double {
    torch::NoGradGuard no_grad;
    const runtime::StepResult result =
        pipeline.step(eval_batch.inputs.defined() ? runtime::TensorList{eval_batch.inputs}
                                                  : runtime::TensorList{},
                      C, eval_criterion,
                      eval_batch.labels.defined() ? runtime::TensorList{eval_batch.labels}
                                                  : runtime::TensorList{});
    at::Tensor slots =
        loss_slots(result.loss, eval_batch.loss_microbatches, ep_rank, C, config.ep, 0);
    allreduce_sum(context.world, slots, timeout);
    return ordered_sum(slots, slots.numel());
  };

  auto save_checkpoint = [&](int step) {
    NamedTensors tensors;
    for (std::size_t slot = 0; slot < model.stages.size(); ++slot) {
      NamedTensors s = stage_state(*model.stages[slot], model.stage_of_slot[slot]);
      tensors.insert(s.begin(), s.end());
    }
    optimizer.save_state(tensors, "opt.");
    balancer.save_counts(tensors);
    save_tensors((fs::path(config.run_dir) / rank_file_name(step, context.env.rank)).string(),
                 tensors);
    barrier();  // every rank's file is on disk before the manifest names it
    if (leader) {
      Manifest m;
      m.step = step;
      m.num_ranks = world_size;
      m.schedule = config.schedule;
      m.config_hash = hash;
      m.dir = checkpoint_dir_name(step);
      for (int r = 0; r < world_size; ++r) m.files.push_back(rank_file_name(step, r));
      m.data_position = data.loader.position();
      m.data_seed = data.loader.seed();
      m.config = to_json(config);
      m.expert_placement = balancer.placement();
      if (initial_held_out) m.config["initial_held_out_loss"] = *initial_held_out;
      commit_checkpoint(config.run_dir, m);
    }
    barrier();
  };

  if (leader) {
    fs::create_directories(config.run_dir);
    if (!control.resume)
      write_file_atomic((fs::path(config.run_dir) / "config.json").string(),
                        to_json(config).dump(2) + "\n");
    out << "dualpipe train: " << config.schedule << " on " << config.num_ranks << " pipeline ranks"
        << (config.ep > 1 ? " x " + std::to_string(config.ep) + " EP" : "") << ", "
        << config.num_layers << " MoE layers (hidden " << config.hidden_size << ", "
        << config.num_experts << " experts, top-" << config.top_k << "), " << C
        << " micro-batches x " << config.microbatch_size << " x " << config.seq_len
        << " bytes per step"
        << (config.eplb_interval > 0
                ? "; EPLB every " + std::to_string(config.eplb_interval) + " steps over " +
                      std::to_string(config.num_physical_experts()) + " physical experts"
                : std::string())
        << "; data " << (config.data.empty() ? kDefaultCorpusPath : config.data) << " ("
        << data.split.train.size() << " train / " << data.split.held_out.size()
        << " held-out bytes); run folder " << config.run_dir << "\n";
    if (control.resume) out << "resuming from the checkpoint of step " << start_step << "\n";
    out.flush();
  }
  std::optional<MetricsWriter> metrics;
  if (leader) metrics.emplace(config.run_dir, start_step);
  if (!initial_held_out) {
    initial_held_out = evaluate();
    if (leader) {
      char line[128];
      std::snprintf(line, sizeof(line), "held-out loss before training %.4f (unigram %.4f)\n",
                    *initial_held_out, data.unigram_loss);
      out << line << std::flush;
    }
  }

  // --- Train. ---
  RunResult result;
  result.step = start_step;
  const int trace_step = start_step + std::min(10, config.steps - start_step);
  std::optional<PipelineReport> report;
  const auto run_start = Clock::now();
  double trained_seconds = 0.0;
  for (int step = start_step + 1; step <= config.steps; ++step) {
    const auto step_start = Clock::now();
    const at::Tensor windows =
        data.loader.next(static_cast<int64_t>(config.ep) * C * config.microbatch_size);
    const at::Tensor mine =
        windows.narrow(0, ep_rank * C * config.microbatch_size, C * config.microbatch_size);
    const RankBatch batch = rank_batch(schedule, rank, mine);
    runtime::StepResult step_result = pipeline.step(
        batch.inputs.defined() ? runtime::TensorList{batch.inputs} : runtime::TensorList{}, C,
        criterion,
        batch.labels.defined() ? runtime::TensorList{batch.labels} : runtime::TensorList{});
    if (step == trace_step) {
      report = gather_pipeline_report(context, pipeline.executor().trace().events(),
                                      pipeline.executor().activation_peak(), peak_rss_mib(), step);
    }
    sync_ep_gradients(model, grid.ep_group(), timeout);
    balancer.sum_replica_gradients();
    if (step == control.inject_nonfinite_step && step_result.loss.defined()) {
      step_result.loss = step_result.loss.clone();
      step_result.loss[std::min<int64_t>(1, step_result.loss.numel() - 1)] = NAN;
    }
    at::Tensor slots =
        loss_slots(step_result.loss, batch.loss_microbatches, ep_rank, C, config.ep, 1);
    const bool stop_here = control.stop_requested && *control.stop_requested != 0;
    slots[slots.numel() - 1] = stop_here ? 1.0 : 0.0;
    allreduce_sum(context.world, slots, timeout);
    const double* values = slots.data_ptr<double>();
    for (int i = 0; i < config.ep * C; ++i) {
      if (!std::isfinite(values[i])) {
        result.outcome = RunOutcome::kNonFinite;
        result.message = "non-finite loss (" + std::to_string(values[i]) + ") at step " +
                         std::to_string(step) + ", micro-batch " + std::to_string(i % C) +
                         (config.ep > 1 ? " of EP pipeline " + std::to_string(i / C) : "") +
                         "; the run stops without updating the weights, its last good checkpoint "
                         "is step " +
                         std::to_string(has_checkpoint(config.run_dir)
                                            ? read_latest_checkpoint(config.run_dir).step
                                            : 0);
        if (leader) out << "dualpipe train: " << result.message << "\n" << std::flush;
        return result;
      }
    }
    const double loss = ordered_sum(slots, config.ep * C);
    optimizer.step(learning_rate_at(step, config.steps, config.warmup_steps, config.learning_rate));
    optimizer.zero_grad();
    if (balancer.due(step)) {
      const RebalanceReport r = balancer.rebalance(moments);
      ++rebalances;
      last_rebalance = r;
      if (leader) {
        char line[256];
        std::snprintf(line, sizeof(line),
                      "step %d: EPLB rebalanced from %.0f expert choices (tokens x top-k, all "
                      "layers): %d of %d layers changed placement; per-GPU token imbalance "
                      "(max/mean) %.3f -> %.3f\n",
                      step, r.assignments, r.layers_changed, config.num_layers, r.imbalance_before,
                      r.imbalance_after);
        out << line << std::flush;
      }
    }
    const double step_seconds = seconds_since(step_start);
    trained_seconds += step_seconds;
    result.step = step;

    StepMetrics row;
    row.step = step;
    row.loss = loss;
    row.step_seconds = step_seconds;
    row.tokens_per_second = static_cast<double>(tokens_per_step) / step_seconds;
    const bool last = step == config.steps;
    const bool stopping = values[config.ep * C] > 0.0;
    if (step % config.eval_interval == 0 || last || stopping) row.held_out_loss = evaluate();
    if (leader) {
      metrics->write(row);
      const int done = step - start_step;
      if (step <= start_step + 3 || step % 10 == 0 || row.held_out_loss || last) {
        const double eta = trained_seconds / done * (config.steps - step);
        out << format_progress(row, config.steps, eta) << "\n" << std::flush;
      }
    }
    if (step % config.checkpoint_interval == 0 || last || stopping) save_checkpoint(step);
    if (stopping) {
      result.outcome = RunOutcome::kStopped;
      if (leader) {
        out << "dualpipe train: stopped at step " << step << " on request; checkpoint written. "
            << "Resume with: dualpipe train --resume " << config.run_dir << "\n"
            << std::flush;
      }
      return result;
    }
  }

  // --- Run folder pictures and summary (rank 0). ---
  if (leader) {
    const std::vector<StepMetrics> rows = read_metrics(config.run_dir);
    std::vector<CurvePoint> train_curve, held_out_curve;
    held_out_curve.push_back({0.0, *initial_held_out});
    for (const StepMetrics& m : rows) {
      train_curve.push_back({static_cast<double>(m.step), m.loss});
      if (m.held_out_loss)
        held_out_curve.push_back({static_cast<double>(m.step), *m.held_out_loss});
    }
    write_file_atomic((fs::path(config.run_dir) / "loss_curve.svg").string(),
                      loss_curve_svg(train_curve, held_out_curve, data.unigram_loss,
                                     "byte-level MoE, " + config.schedule + " on " +
                                         std::to_string(config.num_ranks) + " ranks"));
    nlohmann::json summary;
    summary["steps"] = result.step;
    summary["seconds"] = seconds_since(run_start);
    summary["unigram_loss"] = data.unigram_loss;
    summary["held_out_loss_start"] = *initial_held_out;
    if (config.eplb_interval > 0) {
      summary["eplb"]["rebalances"] = rebalances;
      summary["eplb"]["expert_placement"] = balancer.placement();
      if (last_rebalance) {
        summary["eplb"]["last_imbalance_before"] = last_rebalance->imbalance_before;
        summary["eplb"]["last_imbalance_after"] = last_rebalance->imbalance_after;
        summary["eplb"]["last_layers_changed"] = last_rebalance->layers_changed;
      }
    }
    if (!rows.empty()) {
      summary["train_loss_start"] = rows.front().loss;
      summary["train_loss_end"] = rows.back().loss;
      if (rows.back().held_out_loss) summary["held_out_loss_end"] = *rows.back().held_out_loss;
    }
    out << "\nsummary after " << result.step << " steps ("
        << format_duration(seconds_since(run_start)) << " this run):\n";
    char line[256];
    if (!rows.empty()) {
      std::snprintf(line, sizeof(line), "  train loss     %.4f -> %.4f\n", rows.front().loss,
                    rows.back().loss);
      out << line;
      std::snprintf(line, sizeof(line), "  held-out loss  %.4f -> %.4f\n", *initial_held_out,
                    rows.back().held_out_loss.value_or(NAN));
      out << line;
    }
    std::snprintf(line, sizeof(line),
                  "  unigram loss   %.4f (entropy of the training bytes, nats/byte)\n",
                  data.unigram_loss);
    out << line;
    if (last_rebalance) {
      std::snprintf(line, sizeof(line),
                    "  EPLB           %d rebalances; the last: per-GPU token imbalance %.3f -> "
                    "%.3f, %d of %d layers moved\n",
                    rebalances, last_rebalance->imbalance_before, last_rebalance->imbalance_after,
                    last_rebalance->layers_changed, config.num_layers);
      out << line;
    }
    if (report) {
      write_pipeline_report(*report, schedule, config.run_dir, out, summary);
      const unsigned cores = std::thread::hardware_concurrency();
      if (cores > 0 && cores < static_cast<unsigned>(world_size)) {
        out << "  NOTE: " << world_size << " ranks share " << cores
            << " cores here, so ranks computing at the same time slow each other down and the "
               "measured bubble exceeds the simulated one, which assumes a core per rank\n";
      }
    }
    write_file_atomic((fs::path(config.run_dir) / "summary.json").string(), summary.dump(2) + "\n");
    out << "run folder " << config.run_dir
        << ": metrics.csv, metrics.jsonl, loss_curve.svg, timeline.svg, trace.json, "
           "summary.json, checkpoints\n"
        << std::flush;
  }
  return result;
}

}  // namespace dualpipe::train

#include "dualpipe/train/reference.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <numeric>
#include <stdexcept>

#include "dualpipe/runtime/gradient_buffers.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/train/optimizer.h"
#include "dualpipe/train/trainable_model.h"
#include "dualpipe/train/training_data.h"

namespace dualpipe::train {
namespace {

// Forward and backward of micro-batch `microbatch` (rows `window` of the step's batch) through
// every stage in turn, accumulating the stages' gradients; returns its loss. `direction` names
// the copy of the stages (the MicrobatchId the stages key their saved activations by).
double train_microbatch(std::vector<std::shared_ptr<moe::MoEStage>>& stages, int direction,
                        int microbatch, const at::Tensor& window, int64_t seq_len,
                        const runtime::Criterion& criterion) {
  const int num_stages = static_cast<int>(stages.size());
  const at::Tensor inputs = window.narrow(1, 0, seq_len).contiguous();
  const at::Tensor labels = window.narrow(1, 1, seq_len).contiguous();
  const runtime::MicrobatchId base{direction, 0, microbatch};
  std::vector<runtime::TensorList> stage_inputs(num_stages), stage_outputs(num_stages);
  runtime::TensorList x = {inputs};
  for (int s = 0; s < num_stages; ++s) {
    runtime::MicrobatchId id = base;
    id.stage = s;
    stage_inputs[s] = x;
    stage_outputs[s] = stages[s]->forward(id, x);
    if (s + 1 < num_stages) {
      x = {stage_outputs[s].at(0).detach().requires_grad_()};
    }
  }
  const at::Tensor loss = criterion(stage_outputs.back(), {labels});
  const double value = loss.item<float>();
  runtime::TensorList grads;
  for (int s = num_stages - 1; s >= 0; --s) {
    runtime::MicrobatchId id = base;
    id.stage = s;
    if (s == num_stages - 1) {
      stages[s]->backward(id, {loss}, {});
    } else {
      stages[s]->backward(id, stage_outputs[s], grads);
    }
    if (s > 0) grads = {stage_inputs[s].at(0).grad()};
  }
  return value;
}

}  // namespace

ReferenceResult train_reference(const TrainConfig& config) {
  config.validate();
  std::vector<int> every_stage(config.num_stages());
  std::iota(every_stage.begin(), every_stage.end(), 0);
  TrainableModel model = build_trainable_model(config, every_stage);
  TrainingData data = load_training_data(config);
  const int C = config.num_microbatches;
  const int64_t rows = config.microbatch_size;
  // NOTE: with ep > 1 the global batch is ep pipelines' batches (dp does not change it); the
  // reference trains them one after the other, with the dense experts.
  const int ep = config.ep;
  const runtime::Criterion criterion = moe::language_model_criterion(
      static_cast<double>(ep * C * config.microbatch_size * config.seq_len));
  // Each direction of the schedule accumulates its share of the micro-batches in its own copy of
  // the stages (DualPipe: two halves), summed afterwards as the pipeline's mirror sync does.
  const int groups =
      schedule::schedule_placement(config.schedule, config.num_ranks, {config.stages_per_rank})
          .num_directions();

  ReferenceResult result;
  for (int step = 1; step <= config.steps; ++step) {
    const at::Tensor all_windows = data.loader.next(ep * C * rows);
    std::vector<double> losses(ep * C, 0.0);
    for (int e = 0; e < ep; ++e) {
      const at::Tensor windows = all_windows.narrow(0, e * C * rows, C * rows);
      for (int g = 0; g < groups; ++g) {
        // Each group computes its own gradients, then adds the earlier groups' sum to them, in the
        // order the mirror sync adds the copies.
        std::vector<at::Tensor> earlier;
        if (groups > 1) earlier = runtime::take_gradients(model.parameters);
        for (int m = g * C / groups; m < (g + 1) * C / groups; ++m) {
          losses[e * C + m] = train_microbatch(
              model.stages, g, m, windows.narrow(0, m * rows, rows), config.seq_len, criterion);
        }
        if (groups > 1) runtime::restore_gradients(model.parameters, earlier, /*drop_new=*/false);
      }
    }
    double sum = 0.0;
    for (double l : losses) sum += l;
    result.losses.push_back(sum);
    model.optimizer.step(
        learning_rate_at(step, config.steps, config.warmup_steps, config.learning_rate));
    model.optimizer.zero_grad();
  }
  result.parameters = model_state(model);
  return result;
}

}  // namespace dualpipe::train

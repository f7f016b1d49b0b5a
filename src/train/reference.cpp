#include "dualpipe/train/reference.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <stdexcept>

#include "dualpipe/runtime/gradient_buffers.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/train/model.h"
#include "dualpipe/train/optimizer.h"
#include "dualpipe/train/training_data.h"

namespace dualpipe::train {

ReferenceResult train_reference(const TrainConfig& config) {
  config.validate();
  if (config.ep != 1) throw std::invalid_argument("the reference trains with ep=1 only");
  const int num_stages = config.num_stages();
  std::vector<std::shared_ptr<moe::MoEStage>> stages;
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  for (int s = 0; s < num_stages; ++s) {
    stages.push_back(build_stage(config, s));
    for (auto& item : stages.back()->named_parameters()) {
      names.push_back(stage_prefix(s) + item.key());
      params.push_back(item.value());
    }
  }
  AdamWOptions adam;
  adam.weight_decay = config.weight_decay;
  AdamW optimizer(names, params, adam);
  TrainingData data = load_training_data(config);
  const int C = config.num_microbatches;
  const int64_t rows = config.microbatch_size;
  const runtime::Criterion criterion = moe::language_model_criterion(
      static_cast<double>(C * config.microbatch_size * config.seq_len));
  // Each direction of the schedule accumulates its share of the micro-batches in its own copy of
  // the stages (DualPipe: two halves), summed afterwards as the pipeline's mirror sync does.
  const int groups =
      schedule::schedule_placement(config.schedule, config.num_ranks).num_directions();

  ReferenceResult result;
  for (int step = 1; step <= config.steps; ++step) {
    const at::Tensor windows = data.loader.next(C * rows);
    std::vector<double> losses(C, 0.0);
    for (int g = 0; g < groups; ++g) {
      // Each group computes its own gradients, then adds the earlier groups' sum to them, in the
      // order the mirror sync adds the copies.
      std::vector<at::Tensor> earlier;
      if (groups > 1) earlier = runtime::take_gradients(params);
      for (int m = g * C / groups; m < (g + 1) * C / groups; ++m) {
        const at::Tensor w = windows.narrow(0, m * rows, rows);
        const at::Tensor inputs = w.narrow(1, 0, config.seq_len).contiguous();
        const at::Tensor labels = w.narrow(1, 1, config.seq_len).contiguous();
        const runtime::MicrobatchId base{g, 0, m};
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
        losses[m] = loss.item<float>();
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
      }
      if (groups > 1) runtime::restore_gradients(params, earlier, /*drop_new=*/false);
    }
    double sum = 0.0;
    for (double l : losses) sum += l;
    result.losses.push_back(sum);
    optimizer.step(learning_rate_at(step, config.steps, config.warmup_steps, config.learning_rate));
    optimizer.zero_grad();
  }
  for (int s = 0; s < num_stages; ++s) {
    NamedTensors t = stage_state(*stages[s], s);
    result.parameters.insert(t.begin(), t.end());
  }
  return result;
}

}  // namespace dualpipe::train

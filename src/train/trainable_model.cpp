#include "dualpipe/train/trainable_model.h"

#include <string>
#include <utility>

#include "dualpipe/train/model.h"

namespace dualpipe::train {

TrainableModel build_trainable_model(const TrainConfig& config, std::vector<int> stage_of_slot,
                                     const std::shared_ptr<moe::CommStream>& stream,
                                     bool replicated_optimizer) {
  std::vector<std::shared_ptr<moe::MoEStage>> stages;
  for (int stage : stage_of_slot) stages.push_back(build_stage(config, stage, stream));
  std::vector<std::string> names;
  std::vector<at::Tensor> parameters;
  for (std::size_t slot = 0; slot < stages.size(); ++slot) {
    for (auto& item : stages[slot]->named_parameters()) {
      names.push_back(stage_prefix(stage_of_slot[slot]) + item.key());
      parameters.push_back(item.value());
    }
  }
  AdamW optimizer = replicated_optimizer ? AdamW(names, parameters, adamw_options(config))
                                         : AdamW({}, {}, adamw_options(config));
  return TrainableModel{std::move(stages), std::move(stage_of_slot), std::move(parameters),
                        std::move(names), std::move(optimizer)};
}

AdamWOptions adamw_options(const TrainConfig& config) {
  AdamWOptions adam;
  adam.weight_decay = config.weight_decay;
  return adam;
}

NamedTensors model_state(const TrainableModel& model) {
  NamedTensors state;
  for (std::size_t slot = 0; slot < model.stages.size(); ++slot) {
    NamedTensors s = stage_state(*model.stages[slot], model.stage_of_slot[slot]);
    state.insert(s.begin(), s.end());
  }
  return state;
}

}  // namespace dualpipe::train

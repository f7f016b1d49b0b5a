#pragma once
// The model stages one process trains and the AdamW over their parameters, built the same way
// for a rank of `dualpipe train` (the stages its schedule places on it) and for the
// single-process reference (every stage), so both start from the same weights and update the
// same parameters in the same order.

#include <ATen/Tensor.h>

#include <memory>
#include <vector>

#include "dualpipe/moe/comm_stream.h"
#include "dualpipe/moe/moe_stage.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/optimizer.h"
#include "dualpipe/train/train_config.h"

namespace dualpipe::train {

struct TrainableModel {
  std::vector<std::shared_ptr<moe::MoEStage>> stages;  // one module per slot
  std::vector<int> stage_of_slot;                      // the model stage each slot's module is
  std::vector<at::Tensor> parameters;                  // every slot's parameters, in slot order
  std::vector<std::string> parameter_names;            // "stage<s>.<name>" of each
  // Over `parameters`; over none when built without a replicated optimiser (a ShardedAdamW of
  // the trainer then holds the state).
  AdamW optimizer;
};

// Builds model stage stage_of_slot[i] into slot i (build_stage with `stream`, see model.h) and
// an AdamW with config.weight_decay over all their parameters (over none, allocating no state,
// when `replicated_optimizer` is false). Does not communicate. Throws std::invalid_argument for
// a stage outside [0, config.num_stages()).
TrainableModel build_trainable_model(const TrainConfig& config, std::vector<int> stage_of_slot,
                                     const std::shared_ptr<moe::CommStream>& stream = nullptr,
                                     bool replicated_optimizer = true);

// AdamW's options for `config`.
AdamWOptions adamw_options(const TrainConfig& config);

// Every slot's parameters and buffers as "stage<s>.<name>" (detached, shared with the modules;
// two slots holding copies of one stage give one entry, the first slot's).
NamedTensors model_state(const TrainableModel& model);

}  // namespace dualpipe::train

#include "dualpipe/runtime/executor.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <stdexcept>
#include <string>

#include "dualpipe/check.h"
#include "dualpipe/schedule/op.h"

namespace dualpipe::runtime {

using schedule::Op;
using schedule::OpKind;

namespace {

std::string stage_name(int direction, int stage) {
  return "stage (d=" + std::to_string(direction) + ", s=" + std::to_string(stage) + ")";
}

std::vector<TensorSpec> specs_of(const TensorList& tensors) {
  std::vector<TensorSpec> specs;
  for (const at::Tensor& t : tensors) specs.push_back(TensorSpec::of(t));
  return specs;
}

// Detached leaves that receive gradients in backward (floating tensors only).
TensorList as_leaves(const TensorList& tensors, bool training) {
  TensorList leaves;
  for (const at::Tensor& t : tensors) {
    if (!t.defined()) {
      leaves.emplace_back();
      continue;
    }
    at::Tensor leaf = t.detach();
    if (training && at::isFloatingType(leaf.scalar_type())) leaf.requires_grad_(true);
    leaves.push_back(leaf);
  }
  return leaves;
}

MicrobatchId id_of(const Op& op) {
  return {op.direction, op.stage, op.microbatch};
}

}  // namespace

struct Executor::RunState {
  const schedule::Schedule& schedule;
  const StepData& data;
  bool training;
  std::unique_ptr<P2PChannel> channel;
  StepOutput output;
  int live = 0;
  // NOTE: the peak is counted between ops, as the simulator does: an FB pair ends one
  // micro-batch's backward as it ends another's forward, so it leaves the count unchanged.
  bool in_pair = false;
  // First activation specs seen per receiving (direction, stage): later ones must match.
  std::map<std::pair<int, int>, std::vector<TensorSpec>> first_specs;

  bool is_last(int stage) const { return stage == schedule.num_stages() - 1; }
};

Executor::Executor(int rank, std::vector<StagePtr> modules, CommunicatorPtr comm,
                   std::vector<int> comm_rank_of, ExecutorOptions options)
    : rank_(rank),
      modules_(std::move(modules)),
      comm_(std::move(comm)),
      comm_rank_of_(std::move(comm_rank_of)),
      options_(options) {
  trace_.set_enabled(options_.trace);
}

Executor::Instance& Executor::instance(const MicrobatchId& id) {
  return instances_[MicrobatchId{id.direction, id.stage, id.microbatch}];
}

void Executor::check_specs(RunState& state, const ItemKey& key, int peer,
                           const std::vector<TensorSpec>& specs) {
  const int consumer = schedule::consumer_stage(key.item());
  const std::string sender = stage_name(key.id.direction, key.id.stage);
  auto mismatch = [&](const std::vector<TensorSpec>& expected, const std::string& why) {
    throw std::runtime_error("rank " + std::to_string(rank_) + ": " + sender + " on rank " +
                             std::to_string(peer) + " sent " + to_string(key) + " as " +
                             to_string(specs) + " but " + stage_name(key.id.direction, consumer) +
                             " on rank " + std::to_string(rank_) + " expects " +
                             to_string(expected) + " (" + why + ")");
  };
  if (key.kind == ItemKind::kGrad) {
    // The gradient must look like the outputs this rank produced for that micro-batch, one per
    // output; an output may get none (an index tensor, an output the next stage did not use).
    const Instance& inst = instance({key.id.direction, consumer, key.id.microbatch});
    bool fits = specs.size() == inst.output_specs.size();
    for (std::size_t i = 0; fits && i < specs.size(); ++i) {
      fits = !specs[i].defined || specs[i] == inst.output_specs[i];
    }
    if (!fits) mismatch(inst.output_specs, "the shapes of its outputs");
    return;
  }
  const auto stage_key = std::make_pair(key.id.direction, consumer);
  auto it = state.first_specs.find(stage_key);
  if (it == state.first_specs.end()) {
    const int slot = state.schedule.placement.at(key.id.direction, consumer).slot;
    const std::vector<TensorSpec> declared = modules_[slot]->expected_inputs();
    if (!declared.empty() && declared != specs) mismatch(declared, "its declared inputs");
    state.first_specs.emplace(stage_key, specs);
  } else if (it->second != specs) {
    mismatch(it->second, "the shapes of its first micro-batch");
  }
}

TensorList Executor::forward_inputs(RunState& state, const MicrobatchId& id) {
  if (id.stage == 0) {
    const auto& inputs = state.data.inputs;
    if (id.direction >= static_cast<int>(inputs.size()) ||
        id.microbatch >= static_cast<int>(inputs[id.direction].size())) {
      throw std::invalid_argument("rank " + std::to_string(rank_) + " holds the first " +
                                  stage_name(id.direction, 0) + " but has no input for " +
                                  to_string(id));
    }
    return inputs[id.direction][id.microbatch];
  }
  const ItemKey key = ItemKey::of(*schedule::forward_input(id.direction, id.stage, id.microbatch));
  const int producer = schedule::producer_rank(key.item(), state.schedule.placement);
  if (producer == rank_) {
    Instance& prev = instance(key.id);
    TensorList leaves = as_leaves(prev.outputs, state.training);
    if (!state.training) instances_.erase(key.id);
    return leaves;
  }
  std::vector<TensorSpec> specs;
  TensorList received = state.channel->wait_recv(key, &specs);
  check_specs(state, key, producer, specs);
  return as_leaves(received, state.training);
}

TensorList Executor::backward_grads(RunState& state, const MicrobatchId& id) {
  const std::optional<schedule::Item> input =
      schedule::backward_input(id.direction, id.stage, id.microbatch, state.schedule.num_stages());
  if (!input) return {};  // the last stage starts from its loss
  const ItemKey key = ItemKey::of(*input);
  const int producer = schedule::producer_rank(*input, state.schedule.placement);
  if (producer == rank_) {
    TensorList grads = std::move(instances_[key.id].input_grads);
    instances_.erase(key.id);
    return grads;
  }
  std::vector<TensorSpec> specs;
  TensorList grads = state.channel->wait_recv(key, &specs);
  check_specs(state, key, producer, specs);
  return grads;
}

void Executor::finish_forward(RunState& state, const MicrobatchId& id, const TensorList& inputs,
                              TensorList outputs, at::Tensor loss) {
  Instance& inst = instance(id);
  if (state.is_last(id.stage)) {
    if (state.data.return_outputs || !state.training) {
      TensorList detached;
      for (const at::Tensor& t : outputs) detached.push_back(t.defined() ? t.detach() : t);
      state.output.outputs[id.direction][id.microbatch] = std::move(detached);
    }
    if (loss.defined()) state.output.losses[id.direction][id.microbatch] = loss.detach();
    if (state.training) {
      inst.outputs = {loss};
      inst.has_outputs = true;
    } else {
      instances_.erase(MicrobatchId{id.direction, id.stage, id.microbatch});
      return;
    }
  } else {
    inst.output_specs = specs_of(outputs);
    inst.outputs = std::move(outputs);
    inst.has_outputs = true;
  }
  if (state.training) {
    inst.inputs = inputs;
    ++state.live;
    if (!state.in_pair) activation_peak_ = std::max(activation_peak_, state.live);
  }
}

void Executor::run_forward(RunState& state, const MicrobatchId& id) {
  TensorList inputs = forward_inputs(state, id);
  const std::int64_t start = Trace::now_us();
  StageModule& module = *modules_[state.schedule.placement.at(id.direction, id.stage).slot];
  TensorList outputs = module.forward(id, inputs);
  at::Tensor loss;
  if (state.is_last(id.stage) && state.data.criterion != nullptr) {
    loss = (*state.data.criterion)(outputs, state.data.labels.at(id.direction).at(id.microbatch));
  }
  trace_.add("F " + to_string(id), "compute", start);
  finish_forward(state, id, inputs, std::move(outputs), loss);
}

void Executor::finish_backward(RunState& state, const MicrobatchId& id) {
  Instance& inst = instance(id);
  TensorList grads;
  for (const at::Tensor& input : inst.inputs) {
    grads.push_back(input.defined() && input.requires_grad() ? input.grad() : at::Tensor());
  }
  inst.inputs.clear();
  inst.outputs.clear();
  inst.has_outputs = false;
  --state.live;
  if (id.stage == 0) {
    instances_.erase(MicrobatchId{id.direction, id.stage, id.microbatch});
    return;
  }
  inst.input_grads = std::move(grads);
  inst.has_input_grads = true;
}

void Executor::run_backward(RunState& state, const MicrobatchId& id, bool defer_weight_grad) {
  TensorList grads = backward_grads(state, id);
  Instance& inst = instance(id);
  DUALPIPE_ASSERT(inst.has_outputs, "rank ", rank_, ": backward of ", to_string(id),
                  " before its forward");
  const std::int64_t start = Trace::now_us();
  StageModule& module = *modules_[state.schedule.placement.at(id.direction, id.stage).slot];
  if (defer_weight_grad) {
    weight_grad_store_.begin_group();
    DeferWeightGradGuard guard(&weight_grad_store_);
    module.backward(id, inst.outputs, grads);
    weight_grad_store_.end_group();
  } else {
    DeferWeightGradGuard guard(nullptr);
    module.backward(id, inst.outputs, grads);
  }
  trace_.add(std::string("B ") + to_string(id) + (defer_weight_grad ? " z" : ""), "compute", start);
  finish_backward(state, id);
}

void Executor::run_forward_backward(RunState& state, const Op& op) {
  state.in_pair = true;
  run_pair(state, op);
  state.in_pair = false;
  activation_peak_ = std::max(activation_peak_, state.live);
}

void Executor::run_pair(RunState& state, const Op& op) {
  const MicrobatchId fid = id_of(op);
  const MicrobatchId bid{op.backward_direction, op.backward_stage, op.backward_microbatch};
  StageModule& fmodule = *modules_[state.schedule.placement.at(fid.direction, fid.stage).slot];
  if (!fmodule.has_overlap_hook()) {
    run_forward(state, fid);
    run_backward(state, bid, op.defer_weight_grad);
    return;
  }
  StageModule& bmodule = *modules_[state.schedule.placement.at(bid.direction, bid.stage).slot];
  ForwardHalf fhalf{fid, forward_inputs(state, fid), nullptr, {}};
  if (state.is_last(fid.stage) && state.data.criterion != nullptr) {
    fhalf.criterion = state.data.criterion;
    fhalf.labels = state.data.labels.at(fid.direction).at(fid.microbatch);
  }
  BackwardHalf bhalf{bid, {}, backward_grads(state, bid)};
  bhalf.outputs = instance(bid).outputs;
  const std::int64_t start = Trace::now_us();
  ForwardResult result;
  if (op.defer_weight_grad) {
    weight_grad_store_.begin_group();
    DeferWeightGradGuard guard(&weight_grad_store_);
    result = fmodule.overlapped_forward_backward(fhalf, bmodule, bhalf);
    weight_grad_store_.end_group();
  } else {
    DeferWeightGradGuard guard(nullptr);
    result = fmodule.overlapped_forward_backward(fhalf, bmodule, bhalf);
  }
  trace_.add("FB " + to_string(fid) + " / " + to_string(bid), "compute", start);
  finish_forward(state, fid, fhalf.inputs, std::move(result.outputs), result.loss);
  finish_backward(state, bid);
}

namespace {

// Where this rank's stages keep their data: the device of their first parameter, else of the
// first input, else the CPU (a parameter-free stage fed by a previous rank).
at::Device data_device(const std::vector<StagePtr>& modules, const StepData& data) {
  for (const StagePtr& module : modules) {
    for (const at::Tensor& p : module->parameters()) return p.device();
  }
  for (const std::vector<TensorList>& direction : data.inputs) {
    for (const TensorList& microbatch : direction) {
      for (const at::Tensor& t : microbatch) {
        if (t.defined()) return t.device();
      }
    }
  }
  return at::kCPU;
}

}  // namespace

void Executor::run_weight(const Op& op) {
  const std::int64_t start = Trace::now_us();
  weight_grad_store_.pop_and_run();
  trace_.add("W " + to_string(id_of(op)), "compute", start);
}

void Executor::send_activation(RunState& state, const Op& op) {
  Instance& inst = instance(id_of(op));
  TensorList payload;
  for (const at::Tensor& t : inst.outputs) payload.push_back(t.defined() ? t.detach() : t);
  state.channel->send(ItemKey::of(schedule::item_of(op)), op.peer, payload);
  if (!state.training) {
    instances_.erase(id_of(op));
    return;
  }
  // NOTE: the channel holds the payload until sent; autograd needs only the graph behind each
  // output (its saved tensors are its own), so the data goes now.
  for (at::Tensor& t : inst.outputs) {
    if (t.defined() && t.requires_grad() && !t.is_view() && !t.is_leaf()) {
      t.set_data(at::empty({0}, t.options()));
    }
  }
}

void Executor::send_grad(RunState& state, const Op& op) {
  const ItemKey key = ItemKey::of(schedule::item_of(op));
  state.channel->send(key, op.peer, instances_[key.id].input_grads);
  instances_.erase(key.id);
}

void Executor::run_op(RunState& state, const Op& op) {
  const bool training = state.training;
  switch (op.kind) {
    case OpKind::kForward: run_forward(state, id_of(op)); break;
    case OpKind::kBackward:
      if (training) run_backward(state, id_of(op), op.defer_weight_grad);
      break;
    case OpKind::kWeight:
      if (training) run_weight(op);
      break;
    case OpKind::kForwardBackward:
      if (training) {
        run_forward_backward(state, op);
      } else {
        run_forward(state, id_of(op));
      }
      break;
    case OpKind::kSendActivation: send_activation(state, op); break;
    case OpKind::kSendGrad:
      if (training) send_grad(state, op);
      break;
    case OpKind::kRecvActivation:
    case OpKind::kRecvGrad: break;  // posted up front
  }
}

StepOutput Executor::run(const schedule::Schedule& schedule, const StepData& data) {
  DUALPIPE_CHECK(rank_ >= 0 && rank_ < schedule.num_ranks(), "executor rank ", rank_,
                 " is not in the ", schedule.num_ranks(), "-rank schedule");
  DUALPIPE_CHECK(static_cast<int>(modules_.size()) == schedule.placement.num_slots(rank_), "rank ",
                 rank_, " of schedule '", schedule.name, "' holds ",
                 schedule.placement.num_slots(rank_), " stage modules, got ", modules_.size());
  const bool training = at::GradMode::is_enabled();
  // Layers that defer weight gradients record this executor's route while its forwards run, so
  // their backward finds weight_grad_store_ even on another thread (CUDA's device threads).
  WeightGradRouteGuard route_guard(weight_grad_route_);
  RunState state{schedule, data, training, nullptr, {}, 0, false, {}};
  state.channel = std::make_unique<P2PChannel>(comm_, rank_, comm_rank_of_, schedule.num_stages(),
                                               std::max(1, schedule.microbatches_per_direction()),
                                               options_.timeout, options_.trace ? &trace_ : nullptr,
                                               data_device(modules_, data), options_.members);
  const int per_direction = schedule.microbatches_per_direction();
  state.output.losses.assign(schedule.num_directions(), {});
  state.output.outputs.assign(schedule.num_directions(), {});
  for (int d : schedule.placement.directions_ending_on(rank_)) {
    state.output.losses[d].resize(per_direction);
    state.output.outputs[d].resize(per_direction);
  }
  trace_.clear();
  instances_.clear();
  weight_grad_store_.clear();
  activation_peak_ = 0;

  const schedule::Program& program = schedule.programs[rank_];
  // NOTE: every receive header is posted up front: headers are small and this lets each sender's
  // header send complete at once; payload receives follow as headers arrive (see P2PChannel).
  for (const Op& op : program) {
    if (op.kind == OpKind::kRecvActivation || (training && op.kind == OpKind::kRecvGrad)) {
      state.channel->post_recv(ItemKey::of(schedule::item_of(op)), op.peer);
    }
  }
  try {
    for (const Op& op : program) {
      state.channel->progress();
      run_op(state, op);
    }
    state.channel->wait_sends();
  } catch (...) {
    instances_.clear();
    weight_grad_store_.clear();
    throw;
  }
  DUALPIPE_ASSERT(!training || weight_grad_store_.num_queued() == 0, "rank ", rank_, ": ",
                  weight_grad_store_.num_queued(),
                  " deferred weight-gradient groups were never run by a W op");
  instances_.clear();
  return std::move(state.output);
}

}  // namespace dualpipe::runtime

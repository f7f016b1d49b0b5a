#pragma once
// Runs one rank's program of any Schedule over that rank's stage modules and a pipeline
// communicator. No schedule logic lives here: the order of everything comes from the program.
//
// Per op:
//   F   forward of (d, s, m): stage 0 takes the user's micro-batch, other stages the received
//       (or, when the previous stage is local, the locally produced) activation as detached
//       leaves; the last stage applies the criterion to the outputs and that micro-batch's labels.
//   B   backward of (d, s, m) from the received gradient (or the loss); with defer_weight_grad
//       the weight-gradient work of supporting layers goes to the WeightGradStore (one group).
//   W   runs the oldest deferred group.
//   FB  the stage's overlap hook when it has one, else forward then backward.
//   send/recv: asynchronous, through P2PChannel; receive headers are all posted when the step
//       starts, payload receives as soon as their header arrives; a compute op waits only for
//       its own inputs; sent activations drop their data once sent (autograd keeps what it
//       needs); a micro-batch's stage inputs and outputs live until its backward.
// With gradients off (torch::NoGradGuard) only F ops and activation transfers run.

#include <chrono>
#include <map>
#include <memory>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/p2p_channel.h"
#include "dualpipe/runtime/stage_module.h"
#include "dualpipe/runtime/trace.h"
#include "dualpipe/runtime/weight_grad_store.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe::runtime {

struct ExecutorOptions {
  // Every wait for a peer gives up after this long (fatal: see P2PChannel).
  std::chrono::milliseconds timeout{60000};
  // Record a Chrome trace of each run (see trace()).
  bool trace = false;
  // Who is in the communicator (by communicator rank), for errors naming a lost peer.
  GroupMembers members;
};

// What a run needs from the user, per direction (index = direction).
struct StepData {
  // inputs[d][m]: stage inputs of micro-batch m for directions whose stage 0 is on this rank.
  std::vector<std::vector<TensorList>> inputs;
  // labels[d][m]: criterion labels for directions whose last stage is on this rank.
  std::vector<std::vector<TensorList>> labels;
  const Criterion* criterion = nullptr;  // required on ranks holding a last stage when training
  bool return_outputs = false;
};

struct StepOutput {
  // losses[d][m] (detached scalars) for directions whose last stage is on this rank.
  std::vector<std::vector<at::Tensor>> losses;
  // outputs[d][m] (detached) for those directions when return_outputs or forward-only.
  std::vector<std::vector<TensorList>> outputs;
};

class Executor {
 public:
  // `modules[slot]` are this rank's stage modules (as Placement numbers slots); `comm_rank_of[p]`
  // is the communicator rank of pipeline rank p. Does not communicate.
  Executor(int rank, std::vector<StagePtr> modules, CommunicatorPtr comm,
           std::vector<int> comm_rank_of, ExecutorOptions options = {});

  // Runs programs[rank] of `schedule` once. Blocking; every rank of the schedule must call it
  // with the same schedule. Throws std::runtime_error naming this rank, the peer and the item
  // when a peer fails or times out, or when a received shape/dtype disagrees with what the
  // receiving stage expects (naming both stages); after such an error the communicator is
  // unusable. Input and label tensors stay owned by the caller.
  StepOutput run(const schedule::Schedule& schedule, const StepData& data);

  // Most (direction, stage, microbatch) instances with forward done and backward not yet during
  // the last training run, counted between ops (an FB pair leaves the count unchanged): the
  // definition of sim::RankResult::peak_activations.
  int activation_peak() const { return activation_peak_; }
  // What the last run did, when ExecutorOptions::trace is set.
  const Trace& trace() const { return trace_; }
  WeightGradStore& weight_grad_store() { return weight_grad_store_; }
  int rank() const { return rank_; }
  const std::vector<StagePtr>& modules() const { return modules_; }

 private:
  struct Instance {      // one (direction, stage, microbatch) between its forward and backward
    TensorList inputs;   // stage inputs (leaves requiring grad when received and floating)
    TensorList outputs;  // forward outputs ({loss} for a last stage)
    std::vector<TensorSpec> output_specs;
    TensorList input_grads;  // after backward, until sent or consumed locally
    bool has_outputs = false;
    bool has_input_grads = false;
  };
  struct RunState;

  Instance& instance(const MicrobatchId& id);
  TensorList forward_inputs(RunState& state, const MicrobatchId& id);
  TensorList backward_grads(RunState& state, const MicrobatchId& id);
  void finish_forward(RunState& state, const MicrobatchId& id, const TensorList& inputs,
                      TensorList outputs, at::Tensor loss);
  void finish_backward(RunState& state, const MicrobatchId& id);
  void run_forward(RunState& state, const MicrobatchId& id);
  void run_backward(RunState& state, const MicrobatchId& id, bool defer_weight_grad);
  void run_forward_backward(RunState& state, const schedule::Op& op);
  void run_pair(RunState& state, const schedule::Op& op);
  // One op of the program (compute ops only while training, except forwards).
  void run_op(RunState& state, const schedule::Op& op);
  void run_weight(const schedule::Op& op);
  void send_activation(RunState& state, const schedule::Op& op);
  void send_grad(RunState& state, const schedule::Op& op);
  void check_specs(RunState& state, const ItemKey& key, int peer,
                   const std::vector<TensorSpec>& specs);

  int rank_;
  std::vector<StagePtr> modules_;
  CommunicatorPtr comm_;
  std::vector<int> comm_rank_of_;
  ExecutorOptions options_;
  WeightGradStore weight_grad_store_;
  std::shared_ptr<WeightGradRoute> weight_grad_route_ = std::make_shared<WeightGradRoute>();
  Trace trace_;
  std::map<MicrobatchId, Instance> instances_;
  int activation_peak_ = 0;
};

}  // namespace dualpipe::runtime

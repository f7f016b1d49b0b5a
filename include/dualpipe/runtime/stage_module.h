#pragma once
// A pipeline stage as the executor sees it: a torch::nn::Module that maps a list of tensors to a
// list of tensors, called with the identity of the micro-batch it works on.

#include <torch/nn/module.h>

#include <functional>
#include <string>
#include <vector>

#include "dualpipe/runtime/tensor_spec.h"

namespace dualpipe::runtime {

using TensorList = std::vector<at::Tensor>;

// Which stage instance works on which micro-batch. Stateful stages (an MoE block keeping
// per-micro-batch contexts) key their saved state by it. Micro-batches count from 0 within a
// direction, as in the schedule IR.
struct MicrobatchId {
  int direction = 0;
  int stage = 0;
  int microbatch = 0;
  friend bool operator==(const MicrobatchId& a, const MicrobatchId& b) {
    return a.direction == b.direction && a.stage == b.stage && a.microbatch == b.microbatch;
  }
  // Direction, then stage, then micro-batch: ids key ordered maps directly.
  friend bool operator<(const MicrobatchId& a, const MicrobatchId& b) {
    if (a.direction != b.direction) return a.direction < b.direction;
    if (a.stage != b.stage) return a.stage < b.stage;
    return a.microbatch < b.microbatch;
  }
};

// "d0 s2 mb5", for messages and traces.
std::string to_string(const MicrobatchId& id);

// Loss of one micro-batch from the last stage's outputs and that micro-batch's labels. Must
// return a scalar tensor; its backward is run as is (no scaling by the number of micro-batches,
// as in the reference: the gradients are those of the SUM of the micro-batch losses).
using Criterion = std::function<at::Tensor(const TensorList& outputs, const TensorList& labels)>;

// The forward half of an overlapped FB op.
struct ForwardHalf {
  MicrobatchId id;
  TensorList inputs;           // stage inputs (detached leaves that require grad, or user data)
  const Criterion* criterion;  // non-null only when `id` is a last stage
  TensorList labels;           // that micro-batch's labels when `criterion` is set
};

// The backward half of an overlapped FB op.
struct BackwardHalf {
  MicrobatchId id;
  // What the forward of `id` returned (its outputs), or {loss} for a last stage.
  TensorList outputs;
  // Gradients w.r.t. `outputs` (one per output; undefined entries for outputs that need none);
  // empty for a last stage, whose loss is back-propagated with an implicit gradient of 1.
  TensorList output_grads;
};

// What the forward half produced.
struct ForwardResult {
  TensorList outputs;  // the stage's outputs, still attached to the autograd graph
  at::Tensor loss;     // defined iff the forward half had a criterion
};

class StageModule : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;

  // Runs the stage on `inputs` for micro-batch `id` and returns its outputs (attached to the
  // autograd graph when gradients are on). Called on the rank's executor thread; `inputs` are
  // owned by the executor and kept alive until the backward of `id` has run.
  virtual TensorList forward(const MicrobatchId& id, const TensorList& inputs) = 0;

  // Back-propagates micro-batch `id`: `outputs` are what forward(id, ...) returned (or {loss}
  // for a last stage) and `output_grads` their gradients (empty for a loss). The default runs
  // the autograd engine once over all of them. Afterwards the executor reads the gradients of
  // the stage inputs from their .grad(). Overrides must accumulate into parameters' .grad()
  // exactly as autograd would and may release per-micro-batch state of `id` here.
  virtual void backward(const MicrobatchId& id, const TensorList& outputs,
                        const TensorList& output_grads);

  // Overlap hook for FB ops, in the spirit of the reference's
  // `overlapped_forward_backward(module0, inputs0, criterion0, labels0, module1, loss1,
  // outputs1, output_grads1)`.
  //
  // Contract (for implementers such as the MoE block):
  //   - called only when has_overlap_hook() is true, on the stage that holds `forward.id`;
  //     `backward_stage` is the stage module that holds `backward.id` (may be `this`).
  //   - must do exactly what `forward.id`'s forward (plus the criterion when set) and
  //     `backward_stage->backward(backward.id, ...)` would do, in any interleaving it likes
  //     (e.g. the attention of one with the dispatch communication of the other).
  //   - returns the forward outputs, attached to the graph, and the loss when a criterion was
  //     given. Gradients of the backward half land in the parameters' .grad() and in the
  //     backward half's stage inputs' .grad(), as with backward().
  //   - the executor holds a weight-gradient deferral context for the duration of the call
  //     when the op defers weight gradients; Linear layers in both halves see it.
  virtual bool has_overlap_hook() const { return false; }
  virtual ForwardResult overlapped_forward_backward(const ForwardHalf& forward,
                                                    StageModule& backward_stage,
                                                    const BackwardHalf& backward);

  // Optional declared input signature (dtype and shape of each input tensor), checked against
  // the first activation this stage receives from the previous stage. Empty: no declaration;
  // later micro-batches are then compared with the first one.
  virtual std::vector<TensorSpec> expected_inputs() const { return {}; }
};

using StagePtr = std::shared_ptr<StageModule>;

}  // namespace dualpipe::runtime

#pragma once
// One MoE decoder block: h = x + attn(norm1(x)); y = h + moe(norm2(h)).
//
// Besides the plain forward, the block runs as four components separated by detach points, so
// that each can be run (and back-propagated) on its own and the overlapped FB can interleave the
// components of two micro-batches:
//
//   attention: norm1, attention, residual, norm2, router, permute  (compute)
//   dispatch:  token counts, then the token all-to-all              (communication)
//   mlp:       routed experts on the received rows, shared expert   (compute)
//   combine:   the reverse all-to-all, then gate-weighted sum and residuals
//
// Backward runs the same components in reverse: combine (local part, then the reverse
// all-to-all of the gradients), mlp, dispatch (all-to-all of the gradients), attention. The
// weight gradients of attention and mlp are deferred when the projections are deferrable
// Linears and a DeferWeightGradGuard is active.

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "dualpipe/moe/attention.h"
#include "dualpipe/moe/comm_stream.h"
#include "dualpipe/moe/moe_layer.h"
#include "dualpipe/moe/rms_norm.h"

namespace dualpipe::moe {

// A tensor crossing a detach point: `out` is attached to the producing component's graph; the
// consumer uses `leaf` (a detached copy) when it consumes through autograd, or hands `grad` back
// directly when an all-to-all consumes it.
struct Boundary {
  at::Tensor out;
  at::Tensor leaf;
  at::Tensor grad;
  // The gradient of `out` collected from its consumer (undefined if none).
  at::Tensor gradient() const;
};

// What one block keeps for one micro-batch between its components.
struct BlockState {
  at::Tensor input;  // the block's input leaf; its .grad() is the block's input gradient
  Boundary residual, normed, weights, send;  // attention outputs
  DispatchPlan plan;
  PendingAllToAll pending;
  at::Tensor received;              // dispatch output (a leaf)
  Boundary expert_out, shared_out;  // mlp outputs
  at::Tensor returned;              // combine all-to-all output (a leaf)
  at::Tensor output;                // block output, attached to the combine graph
};

class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(const ModelConfig& config, int ep_rank = 0, int ep_size = 1);

  // x: [batch, seq, hidden]. Unsegmented forward through plain autograd (blocking all-to-alls
  // over `stream`, which may be null when ep_size == 1).
  at::Tensor forward(const at::Tensor& x, CommStream* stream);

  // --- the components; `state.input` must be set before attention_forward. ---
  // Every *_launch and the count exchange in dispatch_launch are collectives over `stream`:
  // every EP rank posts them in the same order. *_finish blocks until that all-to-all is done.
  void attention_forward(BlockState& state);
  void dispatch_launch(BlockState& state, CommStream& stream);
  void dispatch_finish(BlockState& state);
  void mlp_forward(BlockState& state);
  void combine_launch(BlockState& state, CommStream& stream);
  void combine_finish(BlockState& state);

  // `grad_output` is the gradient of state.output.
  void combine_backward(BlockState& state, const at::Tensor& grad_output);
  void combine_backward_launch(BlockState& state, CommStream& stream);
  void combine_backward_finish(BlockState& state);
  void mlp_backward(BlockState& state);
  void dispatch_backward_launch(BlockState& state, CommStream& stream);
  void dispatch_backward_finish(BlockState& state);
  void attention_backward(BlockState& state);

  MoELayer& moe() { return moe_; }
  // Copies every weight from a block holding all experts (ep_size == 1).
  void copy_from_dense(DecoderBlockImpl& dense);

 private:
  int64_t hidden_size_;
  RMSNorm norm1_{nullptr};
  CausalSelfAttention attention_{nullptr};
  RMSNorm norm2_{nullptr};
  MoELayer moe_{nullptr};
};
TORCH_MODULE(DecoderBlock);

// Runs the autograd engine from `outputs` with `grads`, skipping pairs whose output needs no
// gradient or whose gradient is undefined; frees the graph.
void run_backward(const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& grads);
// A detached copy of `tensor` that requires grad when grad mode is on (a detach point).
at::Tensor detach_point(const at::Tensor& tensor);

}  // namespace dualpipe::moe

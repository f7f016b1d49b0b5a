// MoEStage::overlapped_forward_backward: the FB overlap hook (timeline in moe_stage.h).
#include <ATen/ATen.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "dualpipe/moe/moe_stage.h"
#include "dualpipe/runtime/weight_grad_store.h"

namespace dualpipe::moe {
namespace {

// Runs the weight gradients of one backward component at a point of our choosing: when the
// executor defers weight gradients itself (a guard is active) they stay in its store.
class WeightGradPoint {
 public:
  WeightGradPoint() : own_(runtime::DeferWeightGradGuard::current() == nullptr) {}
  // Runs `component` with its weight gradients captured (or passed to the executor's store).
  template <typename Fn>
  void capture(Fn&& component) {
    if (!own_) {
      component();
      return;
    }
    runtime::DeferWeightGradGuard guard(&store_);
    store_.begin_group();
    component();
    store_.end_group();
  }
  // Runs the oldest captured group.
  void run() {
    if (own_) store_.pop_and_run();
  }

 private:
  bool own_;
  runtime::WeightGradStore store_;
};

}  // namespace

// NOTE: one long body on purpose (~80 lines): it is the FB timeline itself (moe_stage.h), each
// forward component next to the backward component whose all-to-all it hides; split into
// functions, the interleaving would no longer be visible in one place.
runtime::ForwardResult MoEStage::overlapped_forward_backward(
    const runtime::ForwardHalf& forward, runtime::StageModule& backward_stage,
    const runtime::BackwardHalf& backward) {
  auto* other = dynamic_cast<MoEStage*>(&backward_stage);
  if (other == nullptr || other->stream_ != stream_) {
    throw std::invalid_argument("MoEStage overlap of " + runtime::to_string(forward.id) + " with " +
                                runtime::to_string(backward.id) +
                                " needs an MoEStage on the same CommStream");
  }
  MoEStage& fs = *this;
  MoEStage& bs = *other;
  CommStream& stream = *stream_;
  WeightGradPoint weight_grads;
  ++num_overlapped_;
  // Records one compute component (category "compute", nested in the FB op) when the stream traces.
  auto timed = [&stream](const std::string& name, auto&& component) {
    const std::int64_t start = runtime::Trace::now_us();
    component();
    stream.record(name, "compute", start, runtime::Trace::now_us());
  };

  Context& fctx = fs.contexts_[forward.id];
  fctx = Context();
  fctx.inputs = forward.inputs;
  fctx.blocks.resize(fs.num_blocks());
  Context& bctx = bs.context(backward.id);

  at::Tensor x = fs.begin_forward(fctx);
  at::Tensor grad = bs.begin_backward(bctx, backward.outputs, backward.output_grads);

  const int nf = fs.num_blocks(), nb = bs.num_blocks();
  for (int i = 0; i < std::max(nf, nb); ++i) {
    // Forward layer i pairs with backward layer nb-1-i; the longer stage runs alone at the end.
    BlockState* f = i < nf ? &fctx.blocks[i] : nullptr;
    DecoderBlockImpl* fb = i < nf ? &fs.block(i) : nullptr;
    const int j = nb - 1 - i;
    BlockState* b = j >= 0 ? &bctx.blocks[j] : nullptr;
    DecoderBlockImpl* bb = j >= 0 ? &bs.block(j) : nullptr;
    if (f) f->input = i == 0 ? x : detach_point(fctx.blocks[i - 1].output);

    const std::string lf = " F L" + std::to_string(i), lb = " B L" + std::to_string(j);
    if (b) {
      timed("combine" + lb, [&] {
        bb->combine_backward(*b, j == nb - 1 ? grad : bctx.blocks[j + 1].input.grad());
      });
      bb->combine_backward_launch(*b, stream);
    }
    if (f) {
      timed("attn" + lf, [&] { fb->attention_forward(*f); });  // attn(F) under combine(B)
      fb->dispatch_launch(*f, stream);
    }
    if (b) {
      bb->combine_backward_finish(*b);
      timed("mlp" + lb, [&] {
        weight_grads.capture([&] { bb->mlp_backward(*b); });  // mlp(B) under dispatch(F)
      });
      bb->dispatch_backward_launch(*b, stream);
      timed("mlp W" + lb, [&] { weight_grads.run(); });  // mlp(W)
    }
    if (f) {
      fb->dispatch_finish(*f);
      timed("mlp" + lf, [&] { fb->mlp_forward(*f); });  // mlp(F) under dispatch(B)
      fb->combine_launch(*f, stream);
    }
    if (b) {
      bb->dispatch_backward_finish(*b);
      timed("attn" + lb, [&] {
        weight_grads.capture([&] { bb->attention_backward(*b); });  // attn(B) under combine(F)
      });
    }
    if (f) timed("combine" + lf, [&] { fb->combine_finish(*f); });
    if (b) timed("attn W" + lb, [&] { weight_grads.run(); });  // attn(W)
  }

  fs.end_forward(fctx, fctx.blocks.back().output);
  bs.end_backward(bctx);
  bs.contexts_.erase(backward.id);

  runtime::ForwardResult result;
  result.outputs = {fctx.output};
  if (forward.criterion) result.loss = (*forward.criterion)(result.outputs, forward.labels);
  return result;
}

}  // namespace dualpipe::moe

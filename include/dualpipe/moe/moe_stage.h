#pragma once
// A pipeline stage of the MoE transformer: optional token embedding (first stage), one or more
// MoE decoder blocks, optional final RMSNorm + output head (last stage). It runs its blocks as
// four components each (see decoder_block.h), keeps per-micro-batch contexts keyed by the
// executor's MicrobatchId, and provides the overlap hook for FB ops.
//
// Overlapped FB, per pair of layers (forward layer i of micro-batch F with backward layer n-1-i
// of micro-batch B), as in the DeepSeek-V3 report and its published profile:
//
//   compute: | combine(B) local | attn(F) | mlp(B) | mlp(W) | mlp(F) | attn(B) | combine(F) |
//   attn(W) comm:                       |<- combine(B) a2a ->|
//                                         |<-dispatch(F)->|
//                                                   |<- dispatch(B) a2a ->|
//                                                                   |<-combine(F)->|
//
// The compute thread waits for an all-to-all only when the next computation needs its data.

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include <map>
#include <memory>
#include <vector>

#include "dualpipe/moe/decoder_block.h"
#include "dualpipe/runtime/stage_module.h"

namespace dualpipe::moe {

struct StageOptions {
  int num_blocks = 1;
  bool first = false;  // owns the token embedding: input is token ids [batch, seq] (int64)
  bool last = false;   // owns the final norm and output head: output is logits [batch, seq, vocab]
  int ep_rank = 0;
  int ep_size = 1;
};

class MoEStage : public runtime::StageModule {
 public:
  // `stream` carries this rank's EP all-to-alls (its size must equal options.ep_size); the
  // stages of one rank share it. Null: a one-rank stream without communication (ep_size 1).
  MoEStage(const ModelConfig& config, const StageOptions& options,
           std::shared_ptr<CommStream> stream = nullptr);

  // Segmented forward of micro-batch `id` (inputs: {token ids} on a first stage, else
  // {hidden [batch, seq, hidden]}); keeps its context until backward(id). Outputs are leaves
  // that require grad: the criterion (or the next stage's gradient) meets them there.
  // Collective over the EP stream.
  runtime::TensorList forward(const runtime::MicrobatchId& id,
                              const runtime::TensorList& inputs) override;
  // Segmented backward of `id` (see StageModule::backward); releases its context.
  void backward(const runtime::MicrobatchId& id, const runtime::TensorList& outputs,
                const runtime::TensorList& output_grads) override;

  bool has_overlap_hook() const override { return true; }
  // Interleaves forward.id on this stage with backward.id on `backward_stage` (an MoEStage on the
  // same CommStream) layer by layer as drawn above. Same results as forward() then backward(),
  // bit for bit. When no DeferWeightGradGuard is active, the mlp and attention weight gradients
  // of the backward half run at the mlp(W) and attn(W) points; otherwise they go to the active
  // store as in backward().
  runtime::ForwardResult overlapped_forward_backward(
      const runtime::ForwardHalf& forward, runtime::StageModule& backward_stage,
      const runtime::BackwardHalf& backward) override;

  // Unsegmented forward through plain autograd (blocking all-to-alls): the reference path.
  runtime::TensorList forward_reference(const runtime::TensorList& inputs);

  // Copies every weight from a stage of the same shape that holds all experts (ep_size 1).
  void copy_from_dense(MoEStage& dense);
  DecoderBlockImpl& block(int i) { return *blocks_[i]->as<DecoderBlockImpl>(); }
  int num_blocks() const { return static_cast<int>(blocks_->size()); }
  CommStream& stream() { return *stream_; }
  // Number of micro-batch contexts held (forward done, backward not yet).
  size_t num_contexts() const { return contexts_.size(); }
  // How many overlapped FB calls this stage has run as the forward half.
  int num_overlapped() const { return num_overlapped_; }

 private:
  struct Context {
    runtime::TensorList inputs;
    at::Tensor embedded;  // embedding output (first stage)
    std::vector<BlockState> blocks;
    at::Tensor head_input;  // leaf: last block output (last stage)
    at::Tensor head_out;    // logits, attached (last stage)
    at::Tensor final_out;   // what the stage output leaf is a copy of
    at::Tensor output;      // the stage output leaf
  };
  // Embedding (or the input itself) -> block 0's input.
  at::Tensor begin_forward(Context& ctx);
  void end_forward(Context& ctx, const at::Tensor& last_block_output);
  // The gradient arriving at the last block's output (head backward on a last stage).
  at::Tensor begin_backward(Context& ctx, const runtime::TensorList& outputs,
                            const runtime::TensorList& output_grads);
  void end_backward(Context& ctx);
  Context& context(const runtime::MicrobatchId& id);

  ModelConfig config_;
  StageOptions options_;
  std::shared_ptr<CommStream> stream_;
  torch::nn::Embedding embedding_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  RMSNorm final_norm_{nullptr};
  Linear head_{nullptr};
  std::map<runtime::MicrobatchId, Context> contexts_;
  int num_overlapped_ = 0;
};

// Cross-entropy of last-stage logits against labels [batch, seq] (int64), summed over tokens
// and divided by `denominator` (e.g. tokens per step, so micro-batch losses sum to the mean).
runtime::Criterion language_model_criterion(double denominator = 1.0);

}  // namespace dualpipe::moe

#include "dualpipe/moe/moe_stage.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace dualpipe::moe {
namespace {

void copy_parameters(torch::nn::Module& to, torch::nn::Module& from) {
  at::NoGradGuard no_grad;
  auto source = from.named_parameters();
  for (auto& item : to.named_parameters()) item.value().copy_(source[item.key()]);
}

}  // namespace

MoEStage::MoEStage(const ModelConfig& config, const StageOptions& options,
                   std::shared_ptr<CommStream> stream)
    : config_(config), options_(options), stream_(std::move(stream)) {
  config_.validate();
  if (options.num_blocks < 1) {
    throw std::invalid_argument("MoEStage needs num_blocks >= 1, got " +
                                std::to_string(options.num_blocks));
  }
  if (!stream_) stream_ = std::make_shared<CommStream>(runtime::CommunicatorPtr());
  if (stream_->size() != options.ep_size) {
    throw std::invalid_argument("MoEStage with ep_size=" + std::to_string(options.ep_size) +
                                " got a CommStream over " + std::to_string(stream_->size()) +
                                " ranks");
  }
  if (options.first) {
    embedding_ =
        register_module("embedding", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  }
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < options.num_blocks; ++i) {
    blocks_->push_back(DecoderBlock(config, options.ep_rank, options.ep_size));
  }
  if (options.last) {
    final_norm_ = register_module("final_norm", RMSNorm(config.hidden_size, config.rms_norm_eps));
    head_ = register_module(
        "head", Linear(LinearOptions(config.hidden_size, config.vocab_size).bias(false)));
  }
}

MoEStage::Context& MoEStage::context(const runtime::MicrobatchId& id) {
  auto it = contexts_.find(id);
  if (it == contexts_.end()) {
    throw std::logic_error("MoEStage: backward of " + runtime::to_string(id) +
                           " without its forward");
  }
  return it->second;
}

at::Tensor MoEStage::begin_forward(Context& ctx) {
  if (ctx.inputs.size() != 1) {
    throw std::invalid_argument("MoEStage takes one input tensor, got " +
                                std::to_string(ctx.inputs.size()));
  }
  if (!options_.first) return ctx.inputs[0];
  ctx.embedded = embedding_->forward(ctx.inputs[0]);
  return detach_point(ctx.embedded);
}

void MoEStage::end_forward(Context& ctx, const at::Tensor& last_block_output) {
  if (options_.last) {
    ctx.head_input = detach_point(last_block_output);
    ctx.final_out = head_->forward(final_norm_->forward(ctx.head_input));
  } else {
    ctx.final_out = last_block_output;
  }
  ctx.output = detach_point(ctx.final_out);
}

at::Tensor MoEStage::begin_backward(Context& ctx, const runtime::TensorList& outputs,
                                    const runtime::TensorList& output_grads) {
  at::Tensor grad;
  if (output_grads.empty()) {
    // {loss}: the criterion's graph ends at our output leaf.
    run_backward({outputs.at(0)}, {at::ones_like(outputs.at(0))});
    grad = ctx.output.grad();
  } else {
    grad = output_grads.at(0);
  }
  if (!options_.last) return grad;
  run_backward({ctx.final_out}, {grad});
  return ctx.head_input.grad();
}

void MoEStage::end_backward(Context& ctx) {
  if (options_.first) run_backward({ctx.embedded}, {ctx.blocks[0].input.grad()});
}

runtime::TensorList MoEStage::forward(const runtime::MicrobatchId& id,
                                      const runtime::TensorList& inputs) {
  Context& ctx = contexts_[id];
  ctx = Context();
  ctx.inputs = inputs;
  ctx.blocks.resize(num_blocks());
  at::Tensor x = begin_forward(ctx);
  for (int i = 0; i < num_blocks(); ++i) {
    BlockState& s = ctx.blocks[i];
    s.input = i == 0 ? x : detach_point(ctx.blocks[i - 1].output);
    DecoderBlockImpl& b = block(i);
    b.attention_forward(s);
    b.dispatch_launch(s, *stream_);
    b.dispatch_finish(s);
    b.mlp_forward(s);
    b.combine_launch(s, *stream_);
    b.combine_finish(s);
  }
  end_forward(ctx, ctx.blocks.back().output);
  if (!at::GradMode::is_enabled()) {
    runtime::TensorList out = {ctx.output};
    contexts_.erase(id);
    return out;
  }
  return {ctx.output};
}

void MoEStage::backward(const runtime::MicrobatchId& id, const runtime::TensorList& outputs,
                        const runtime::TensorList& output_grads) {
  Context& ctx = context(id);
  at::Tensor grad = begin_backward(ctx, outputs, output_grads);
  for (int i = num_blocks() - 1; i >= 0; --i) {
    BlockState& s = ctx.blocks[i];
    DecoderBlockImpl& b = block(i);
    b.combine_backward(s, i == num_blocks() - 1 ? grad : ctx.blocks[i + 1].input.grad());
    b.combine_backward_launch(s, *stream_);
    b.combine_backward_finish(s);
    b.mlp_backward(s);
    b.dispatch_backward_launch(s, *stream_);
    b.dispatch_backward_finish(s);
    b.attention_backward(s);
  }
  end_backward(ctx);
  contexts_.erase(id);
}

runtime::TensorList MoEStage::forward_reference(const runtime::TensorList& inputs) {
  at::Tensor x = options_.first ? embedding_->forward(inputs.at(0)) : inputs.at(0);
  for (int i = 0; i < num_blocks(); ++i) x = block(i).forward(x, stream_.get());
  if (options_.last) x = head_->forward(final_norm_->forward(x));
  return {x};
}

void MoEStage::copy_from_dense(MoEStage& dense) {
  if (dense.num_blocks() != num_blocks() || dense.options_.first != options_.first ||
      dense.options_.last != options_.last) {
    throw std::invalid_argument("copy_from_dense needs a stage of the same shape, got " +
                                std::to_string(dense.num_blocks()) + " blocks vs " +
                                std::to_string(num_blocks()));
  }
  if (options_.first) copy_parameters(*embedding_, *dense.embedding_);
  for (int i = 0; i < num_blocks(); ++i) block(i).copy_from_dense(dense.block(i));
  if (options_.last) {
    copy_parameters(*final_norm_, *dense.final_norm_);
    copy_parameters(*head_, *dense.head_);
  }
}

runtime::Criterion language_model_criterion(double denominator) {
  return [denominator](const runtime::TensorList& outputs, const runtime::TensorList& labels) {
    const at::Tensor& logits = outputs.at(0);
    at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                             labels.at(0).reshape({-1}), {}, at::Reduction::Sum);
    return loss / denominator;
  };
}

}  // namespace dualpipe::moe

#include "dualpipe/moe/decoder_block.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <stdexcept>

namespace dualpipe::moe {
namespace {

void copy_parameters(torch::nn::Module& to, torch::nn::Module& from) {
  at::NoGradGuard no_grad;
  auto source = from.named_parameters();
  for (auto& item : to.named_parameters()) item.value().copy_(source[item.key()]);
}

Boundary make_boundary(const at::Tensor& out, bool autograd_consumer) {
  Boundary b;
  b.out = out;
  if (autograd_consumer && out.defined()) b.leaf = detach_point(out);
  return b;
}

at::Tensor grad_or_zeros(const at::Tensor& leaf) {
  return leaf.grad().defined() ? leaf.grad() : at::zeros_like(leaf);
}

}  // namespace

at::Tensor Boundary::gradient() const {
  if (grad.defined()) return grad;
  return leaf.defined() ? leaf.grad() : at::Tensor();
}

at::Tensor detach_point(const at::Tensor& tensor) {
  return tensor.detach().requires_grad_(at::GradMode::is_enabled() &&
                                        at::isFloatingType(tensor.scalar_type()));
}

void run_backward(const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& grads) {
  std::vector<at::Tensor> outs, gs;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].defined() || !outputs[i].requires_grad() || !grads[i].defined()) continue;
    outs.push_back(outputs[i]);
    gs.push_back(grads[i]);
  }
  if (!outs.empty()) torch::autograd::backward(outs, gs);
}

DecoderBlockImpl::DecoderBlockImpl(const ModelConfig& config, int ep_rank, int ep_size)
    : hidden_size_(config.hidden_size) {
  norm1_ = register_module("norm1", RMSNorm(config.hidden_size, config.rms_norm_eps));
  attention_ =
      register_module("attention", CausalSelfAttention(config.hidden_size, config.num_heads));
  norm2_ = register_module("norm2", RMSNorm(config.hidden_size, config.rms_norm_eps));
  moe_ = register_module("moe", MoELayer(config, ep_rank, ep_size));
}

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, CommStream* stream) {
  at::Tensor h = x + attention_->forward(norm1_->forward(x));
  at::Tensor y = moe_->forward(norm2_->forward(h).reshape({-1, hidden_size_}), stream);
  return h + y.view_as(h);
}

void DecoderBlockImpl::attention_forward(BlockState& s) {
  at::Tensor h = s.input + attention_->forward(norm1_->forward(s.input));
  at::Tensor normed = norm2_->forward(h).reshape({-1, hidden_size_});
  Routing routing = moe_->route(normed);
  s.plan = moe_->make_plan(routing);
  moe_->record_load(s.plan);
  s.residual = make_boundary(h, true);
  s.normed = make_boundary(normed, true);
  s.weights = make_boundary(routing.weights, true);
  s.send = make_boundary(moe_->permute(normed, s.plan), false);
}

void DecoderBlockImpl::dispatch_launch(BlockState& s, CommStream& stream) {
  moe_->complete_plan(s.plan, &stream);
  s.pending =
      stream.all_to_all(s.send.out.detach(), s.plan.send_splits, s.plan.recv_splits, "dispatch");
}

void DecoderBlockImpl::dispatch_finish(BlockState& s) {
  s.received = detach_point(s.pending.wait());
}

void DecoderBlockImpl::mlp_forward(BlockState& s) {
  s.expert_out = make_boundary(moe_->experts_forward(s.received, s.plan), false);
  s.shared_out = make_boundary(moe_->shared_forward(s.normed.leaf), true);
}

void DecoderBlockImpl::combine_launch(BlockState& s, CommStream& stream) {
  s.pending = stream.all_to_all(s.expert_out.out.detach(), s.plan.recv_splits, s.plan.send_splits,
                                "combine");
}

void DecoderBlockImpl::combine_finish(BlockState& s) {
  s.returned = detach_point(s.pending.wait());
  at::Tensor h = s.residual.leaf;
  at::Tensor y = moe_->combine(s.returned, s.plan, s.weights.leaf);
  if (s.shared_out.leaf.defined()) y = y + s.shared_out.leaf;
  s.output = h + y.view_as(h);
}

void DecoderBlockImpl::combine_backward(BlockState& s, const at::Tensor& grad_output) {
  run_backward({s.output}, {grad_output});
  s.output = at::Tensor();
}

void DecoderBlockImpl::combine_backward_launch(BlockState& s, CommStream& stream) {
  // NOTE: every EP rank joins this exchange, so a missing gradient travels as zeros.
  s.pending = stream.all_to_all(grad_or_zeros(s.returned), s.plan.send_splits, s.plan.recv_splits,
                                "combine backward");
  s.returned = at::Tensor();
}

void DecoderBlockImpl::combine_backward_finish(BlockState& s) {
  s.expert_out.grad = s.pending.wait();
}

void DecoderBlockImpl::mlp_backward(BlockState& s) {
  run_backward({s.expert_out.out, s.shared_out.out},
               {s.expert_out.gradient(), s.shared_out.gradient()});
  s.expert_out = Boundary();
  s.shared_out = Boundary();
}

void DecoderBlockImpl::dispatch_backward_launch(BlockState& s, CommStream& stream) {
  s.pending = stream.all_to_all(grad_or_zeros(s.received), s.plan.recv_splits, s.plan.send_splits,
                                "dispatch backward");
  s.received = at::Tensor();
}

void DecoderBlockImpl::dispatch_backward_finish(BlockState& s) {
  s.send.grad = s.pending.wait();
}

void DecoderBlockImpl::attention_backward(BlockState& s) {
  run_backward(
      {s.residual.out, s.normed.out, s.weights.out, s.send.out},
      {s.residual.gradient(), s.normed.gradient(), s.weights.gradient(), s.send.gradient()});
  s.residual = s.normed = s.weights = s.send = Boundary();
}

void DecoderBlockImpl::copy_from_dense(DecoderBlockImpl& dense) {
  copy_parameters(*norm1_, *dense.norm1_);
  copy_parameters(*attention_, *dense.attention_);
  copy_parameters(*norm2_, *dense.norm2_);
  moe_->copy_from_dense(*dense.moe_);
}

}  // namespace dualpipe::moe

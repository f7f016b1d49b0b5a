#include "dualpipe/moe/moe_layer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <numeric>
#include <stdexcept>
#include <string>

#include "dualpipe/moe/all_to_all.h"

namespace dualpipe::moe {
namespace {

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void copy_parameters(torch::nn::Module& to, torch::nn::Module& from) {
  at::NoGradGuard no_grad;
  auto source = from.named_parameters();
  for (auto& item : to.named_parameters()) item.value().copy_(source[item.key()]);
}

}  // namespace

MoELayerImpl::MoELayerImpl(const ModelConfig& config, int ep_rank, int ep_size)
    : config_(config), ep_rank_(ep_rank), ep_size_(ep_size) {
  config_.validate();
  if (ep_size < 1 || ep_rank < 0 || ep_rank >= ep_size) {
    throw std::invalid_argument("MoELayer needs 0 <= ep_rank < ep_size, got ep_rank=" +
                                std::to_string(ep_rank) + ", ep_size=" + std::to_string(ep_size));
  }
  if (config.num_experts % ep_size != 0) {
    throw std::invalid_argument(
        "MoELayer partitions experts evenly over the EP ranks, got num_experts=" +
        std::to_string(config.num_experts) + ", ep_size=" + std::to_string(ep_size));
  }
  num_local_experts_ = config.num_experts / ep_size;
  router_ = register_module("router", Router(config.hidden_size, config.num_experts, config.top_k));
  experts_ = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < num_local_experts_; ++e) {
    experts_->push_back(SwiGLUExpert(config.hidden_size, config.expert_hidden_size));
  }
  if (config.shared_expert) {
    shared_ =
        register_module("shared", SwiGLUExpert(config.hidden_size, config.expert_hidden_size));
  }
}

DispatchPlan MoELayerImpl::make_plan(const Routing& routing) const {
  DispatchPlan plan;
  plan.num_tokens = routing.expert_ids.size(0);
  plan.top_k = routing.expert_ids.size(1);
  at::Tensor flat = routing.expert_ids.reshape({-1});
  at::Tensor order = std::get<1>(at::sort(flat, /*stable=*/true, 0, /*descending=*/false));
  plan.sorted_token = at::floor_divide(order, plan.top_k);
  plan.unsort =
      at::empty_like(order).scatter_(0, order, at::arange(order.numel(), order.options()));
  plan.send_counts = to_vector(at::bincount(flat, {}, config_.num_experts));
  plan.send_splits.assign(ep_size_, 0);
  for (int64_t e = 0; e < config_.num_experts; ++e) {
    plan.send_splits[e / num_local_experts_] += plan.send_counts[e];
  }
  return plan;
}

void MoELayerImpl::complete_plan(DispatchPlan& plan, CommStream* stream) const {
  if (ep_size_ > 1 && (stream == nullptr || stream->size() != ep_size_)) {
    throw std::invalid_argument("MoELayer with ep_size=" + std::to_string(ep_size_) +
                                " needs a CommStream over " + std::to_string(ep_size_) +
                                " ranks, got " +
                                (stream ? std::to_string(stream->size()) : std::string("none")));
  }
  plan.recv_counts = ep_size_ > 1 ? stream->exchange_counts(plan.send_counts) : plan.send_counts;
  const int64_t local = num_local_experts_;
  plan.recv_splits.assign(ep_size_, 0);
  plan.rows_per_local_expert.assign(local, 0);
  std::vector<int64_t> offsets(ep_size_ * local);
  int64_t offset = 0;
  for (int src = 0; src < ep_size_; ++src) {
    for (int64_t e = 0; e < local; ++e) {
      const int64_t n = plan.recv_counts[src * local + e];
      offsets[src * local + e] = offset;
      offset += n;
      plan.recv_splits[src] += n;
      plan.rows_per_local_expert[e] += n;
    }
  }
  std::vector<int64_t> expert_major;
  expert_major.reserve(offset);
  for (int64_t e = 0; e < local; ++e) {
    for (int src = 0; src < ep_size_; ++src) {
      const int64_t start = offsets[src * local + e];
      for (int64_t i = 0; i < plan.recv_counts[src * local + e]; ++i) {
        expert_major.push_back(start + i);
      }
    }
  }
  std::vector<int64_t> source_major(offset);
  for (int64_t i = 0; i < offset; ++i) source_major[expert_major[i]] = i;
  plan.expert_major = at::tensor(expert_major, at::kLong);
  plan.source_major = at::tensor(source_major, at::kLong);
}

at::Tensor MoELayerImpl::permute(const at::Tensor& x, const DispatchPlan& plan) const {
  return x.index_select(0, plan.sorted_token);
}

at::Tensor MoELayerImpl::experts_forward(const at::Tensor& received, const DispatchPlan& plan) {
  at::Tensor grouped = received.index_select(0, plan.expert_major);
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  for (int64_t e = 0; e < num_local_experts_; ++e) {
    const int64_t n = plan.rows_per_local_expert[e];
    // NOTE: an expert without tokens is skipped, so its weights get no gradient (as in the
    // dense layer, which skips it too).
    if (n == 0) continue;
    outputs.push_back(experts_[e]->as<SwiGLUExpertImpl>()->forward(grouped.narrow(0, offset, n)));
    offset += n;
  }
  // NOTE: with no rows the (empty) result still hangs off `received`, so the backward
  // all-to-all that every EP rank must join runs here too.
  at::Tensor expert_out = outputs.empty() ? grouped : at::cat(outputs);
  return expert_out.index_select(0, plan.source_major);
}

at::Tensor MoELayerImpl::shared_forward(const at::Tensor& x) {
  return shared_ ? shared_->forward(x) : at::Tensor();
}

at::Tensor MoELayerImpl::combine(const at::Tensor& returned, const DispatchPlan& plan,
                                 const at::Tensor& weights) const {
  at::Tensor pairs = returned.index_select(0, plan.unsort).view({plan.num_tokens, plan.top_k, -1});
  return (pairs * weights.unsqueeze(-1)).sum(1);
}

at::Tensor MoELayerImpl::forward(const at::Tensor& x, CommStream* stream) {
  Routing routing = route(x);
  DispatchPlan plan = make_plan(routing);
  complete_plan(plan, stream);
  at::Tensor send = permute(x, plan);
  at::Tensor received =
      ep_size_ > 1 ? all_to_all(*stream, send, plan.send_splits, plan.recv_splits, "dispatch")
                   : send;
  at::Tensor expert_out = experts_forward(received, plan);
  at::Tensor returned =
      ep_size_ > 1 ? all_to_all(*stream, expert_out, plan.recv_splits, plan.send_splits, "combine")
                   : expert_out;
  at::Tensor y = combine(returned, plan, routing.weights);
  at::Tensor shared = shared_forward(x);
  return shared.defined() ? y + shared : y;
}

void MoELayerImpl::copy_from_dense(MoELayerImpl& dense) {
  if (dense.ep_size_ != 1 || dense.config_.num_experts != config_.num_experts) {
    throw std::invalid_argument("copy_from_dense needs a layer with all " +
                                std::to_string(config_.num_experts) + " experts, got one with " +
                                std::to_string(dense.num_local_experts_) + " local experts");
  }
  copy_parameters(*router_, *dense.router_);
  if (shared_) copy_parameters(*shared_, *dense.shared_);
  for (int64_t e = 0; e < num_local_experts_; ++e) {
    copy_parameters(*experts_[e], *dense.experts_[first_expert() + e]);
  }
}

}  // namespace dualpipe::moe

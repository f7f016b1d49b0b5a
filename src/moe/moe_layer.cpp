#include "dualpipe/moe/moe_layer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <numeric>
#include <stdexcept>
#include <string>

#include "dualpipe/check.h"
#include "dualpipe/moe/all_to_all.h"

namespace dualpipe::moe {
namespace {

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).cpu().contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void copy_parameters(torch::nn::Module& to, torch::nn::Module& from) {
  at::NoGradGuard no_grad;
  auto source = from.named_parameters();
  for (auto& item : to.named_parameters()) item.value().copy_(source[item.key()]);
}

// Restores the default CPU generator's state on destruction: modules built inside draw nothing
// as far as the rest of the model is concerned.
class GeneratorStateGuard {
 public:
  GeneratorStateGuard()
      : generator_(at::detail::getDefaultCPUGenerator()), state_(generator_.get_state()) {}
  ~GeneratorStateGuard() { generator_.set_state(state_); }
  GeneratorStateGuard(const GeneratorStateGuard&) = delete;
  GeneratorStateGuard& operator=(const GeneratorStateGuard&) = delete;

 private:
  at::Generator generator_;
  at::Tensor state_;
};

std::vector<int> trivial_map(int64_t num_physical, int64_t num_logical) {
  std::vector<int> map(num_physical);
  for (int64_t p = 0; p < num_physical; ++p) map[p] = static_cast<int>(p % num_logical);
  return map;
}

}  // namespace

MoELayerImpl::MoELayerImpl(const ModelConfig& config, int ep_rank, int ep_size)
    : config_(config), ep_rank_(ep_rank), ep_size_(ep_size) {
  config_.validate();
  DUALPIPE_CHECK(ep_size >= 1 && ep_rank >= 0 && ep_rank < ep_size,
                 "MoELayer needs 0 <= ep_rank < ep_size, got ep_rank=", ep_rank,
                 ", ep_size=", ep_size);
  const int64_t num_physical = config.num_physical_experts();
  if (num_physical % ep_size != 0) {
    throw std::invalid_argument(
        "MoELayer partitions experts evenly over the EP ranks, got num_experts=" +
        std::to_string(config.num_experts) +
        (config.num_redundant_experts > 0
             ? " + num_redundant_experts=" + std::to_string(config.num_redundant_experts) + " = " +
                   std::to_string(num_physical) + " physical"
             : std::string()) +
        ", ep_size=" + std::to_string(ep_size));
  }
  num_local_experts_ = num_physical / ep_size;
  set_physical_to_logical(trivial_map(num_physical, config.num_experts));
  reset_token_counts();
  router_ = register_module("router", Router(config.hidden_size, config.num_experts, config.top_k));
  experts_ = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < num_local_experts_; ++e) {
    const int64_t physical = first_expert() + e;
    if (physical < config.num_experts) {
      experts_->push_back(SwiGLUExpert(config.hidden_size, config.expert_hidden_size));
      continue;
    }
    GeneratorStateGuard draws_nothing;
    experts_->push_back(SwiGLUExpert(config.hidden_size, config.expert_hidden_size));
    const int64_t source = physical_to_logical_[physical] - first_expert();
    if (source >= 0 && source < e) copy_parameters(*experts_[e], *experts_[source]);
  }
  if (config.shared_expert) {
    shared_ =
        register_module("shared", SwiGLUExpert(config.hidden_size, config.expert_hidden_size));
  }
}

SwiGLUExpertImpl& MoELayerImpl::local_expert(int64_t slot) {
  if (slot < 0 || slot >= num_local_experts_) {
    throw std::out_of_range("MoELayer local expert slot " + std::to_string(slot) + " outside [0, " +
                            std::to_string(num_local_experts_) + ")");
  }
  return *experts_[slot]->as<SwiGLUExpertImpl>();
}

void MoELayerImpl::set_physical_to_logical(const std::vector<int>& map) {
  replicas_ = replica_lists(map);
  physical_to_logical_ = map;
}

void MoELayerImpl::check_physical_to_logical(const std::vector<int>& map) const {
  replica_lists(map);
}

std::vector<std::vector<int>> MoELayerImpl::replica_lists(const std::vector<int>& map) const {
  const int64_t num_physical = config_.num_physical_experts();
  const int64_t num_logical = config_.num_experts;
  DUALPIPE_CHECK(static_cast<int64_t>(map.size()) == num_physical,
                 "MoELayer placement needs one entry per physical expert (", num_physical,
                 "), got ", map.size());
  std::vector<std::vector<int>> replicas(num_logical);
  for (int64_t p = 0; p < num_physical; ++p) {
    DUALPIPE_CHECK(map[p] >= 0 && map[p] < num_logical, "MoELayer placement: physical expert ", p,
                   " holds expert ", map[p], ", outside [0, ", num_logical, ")");
    replicas[map[p]].push_back(static_cast<int>(p));
  }
  for (int64_t e = 0; e < num_logical; ++e) {
    DUALPIPE_CHECK(!replicas[e].empty(), "MoELayer placement: expert ", e, " has no physical slot");
  }
  return replicas;
}

void MoELayerImpl::set_token_counts(const std::vector<int64_t>& counts) {
  DUALPIPE_CHECK(static_cast<int64_t>(counts.size()) == config_.num_experts,
                 "MoELayer token counts need ", config_.num_experts, " entries, got ",
                 counts.size());
  token_counts_ = counts;
}

void MoELayerImpl::record_load(const DispatchPlan& plan) {
  if (!at::GradMode::is_enabled()) return;
  for (size_t e = 0; e < token_counts_.size(); ++e) token_counts_[e] += plan.logical_counts[e];
}

DispatchPlan MoELayerImpl::make_plan(const Routing& routing) const {
  DispatchPlan plan;
  plan.num_tokens = routing.expert_ids.size(0);
  plan.top_k = routing.expert_ids.size(1);
  const int64_t num_logical = config_.num_experts;
  const int64_t num_physical = config_.num_physical_experts();
  const std::vector<int64_t> logical = to_vector(routing.expert_ids.reshape({-1}));
  const int64_t pairs = static_cast<int64_t>(logical.size());
  // Each pair goes to one replica of its expert: the j-th pair of expert e on this rank to
  // replica (ep_rank + j) % replicas, so the ranks start their round-robin at different replicas.
  plan.logical_counts.assign(num_logical, 0);
  plan.send_counts.assign(num_physical, 0);
  std::vector<int64_t> physical(pairs);
  for (int64_t i = 0; i < pairs; ++i) {
    const int64_t e = logical[i];
    DUALPIPE_ASSERT(e >= 0 && e < num_logical, "MoELayer routing chose expert ", e,
                    ", outside [0, ", num_logical, ")");
    const std::vector<int>& replicas = replicas_[e];
    const int64_t n = static_cast<int64_t>(replicas.size());
    physical[i] = n == 1 ? replicas[0] : replicas[(ep_rank_ + plan.logical_counts[e]) % n];
    ++plan.logical_counts[e];
    ++plan.send_counts[physical[i]];
  }
  // Stable counting sort of the pairs by physical slot.
  std::vector<int64_t> next(num_physical, 0);
  for (int64_t p = 1; p < num_physical; ++p) next[p] = next[p - 1] + plan.send_counts[p - 1];
  std::vector<int64_t> sorted_token(pairs), unsort(pairs);
  for (int64_t i = 0; i < pairs; ++i) {
    const int64_t row = next[physical[i]]++;
    sorted_token[row] = i / plan.top_k;
    unsort[i] = row;
  }
  const at::Device device = routing.expert_ids.device();
  plan.sorted_token = at::tensor(sorted_token, at::kLong).to(device);
  plan.unsort = at::tensor(unsort, at::kLong).to(device);
  plan.send_splits.assign(ep_size_, 0);
  for (int64_t p = 0; p < num_physical; ++p) {
    plan.send_splits[p / num_local_experts_] += plan.send_counts[p];
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
  record_load(plan);
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
    const int logical = physical_to_logical_[first_expert() + e];
    copy_parameters(*experts_[e], *dense.experts_[dense.replicas_[logical].front()]);
  }
}

}  // namespace dualpipe::moe

#include "dualpipe/train/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <stdexcept>

namespace dualpipe::train {

AdamW::AdamW(std::vector<std::string> names, std::vector<at::Tensor> params, AdamWOptions options)
    : names_(std::move(names)), params_(std::move(params)), options_(options) {
  if (names_.size() != params_.size()) {
    throw std::invalid_argument("AdamW got " + std::to_string(names_.size()) + " names for " +
                                std::to_string(params_.size()) + " parameters");
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    exp_avg_.push_back(at::zeros_like(params_[i]));
    exp_avg_sq_.push_back(at::zeros_like(params_[i]));
    index_of_[params_[i].unsafeGetTensorImpl()] = i;
  }
}

std::vector<at::Tensor> AdamW::state_of(const at::Tensor& parameter) const {
  auto it = index_of_.find(parameter.unsafeGetTensorImpl());
  if (it == index_of_.end()) {
    throw std::invalid_argument("AdamW does not update this tensor of shape " +
                                c10::str(parameter.sizes()));
  }
  return {exp_avg_[it->second], exp_avg_sq_[it->second]};
}

void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                  at::Tensor& exp_avg_sq, double lr, int64_t step, const AdamWOptions& options) {
  c10::NoGradGuard no_grad;
  const double bias1 = 1.0 - std::pow(options.beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(options.beta2, static_cast<double>(step));
  if (options.weight_decay > 0) param.mul_(1.0 - lr * options.weight_decay);
  exp_avg.mul_(options.beta1).add_(grad, 1.0 - options.beta1);
  exp_avg_sq.mul_(options.beta2).addcmul_(grad, grad, 1.0 - options.beta2);
  const at::Tensor denom = (exp_avg_sq / bias2).sqrt_().add_(options.eps);
  param.addcdiv_(exp_avg, denom, -lr / bias1);
}

void AdamW::step(double lr) {
  ++step_;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& g = params_[i].grad();
    if (!g.defined()) continue;
    adamw_update(params_[i], g, exp_avg_[i], exp_avg_sq_[i], lr, step_, options_);
  }
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    bytes += static_cast<int64_t>(exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes());
  }
  return bytes;
}

void AdamW::zero_grad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

void AdamW::save_state(NamedTensors& out, const std::string& prefix) const {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    out[prefix + names_[i] + ".exp_avg"] = exp_avg_[i].clone();
    out[prefix + names_[i] + ".exp_avg_sq"] = exp_avg_sq_[i].clone();
  }
  out[prefix + "step"] = at::tensor(step_, at::kLong);
}

void AdamW::load_state(const NamedTensors& in, const std::string& prefix) {
  auto fetch = [&](const std::string& key, const at::Tensor& like) {
    auto it = in.find(key);
    if (it == in.end()) throw std::invalid_argument("optimizer state lacks " + key);
    if (like.defined() && !it->second.sizes().equals(like.sizes())) {
      throw std::invalid_argument("optimizer state " + key + " has the wrong shape");
    }
    return it->second;
  };
  for (std::size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(fetch(prefix + names_[i] + ".exp_avg", exp_avg_[i]));
    exp_avg_sq_[i].copy_(fetch(prefix + names_[i] + ".exp_avg_sq", exp_avg_sq_[i]));
  }
  step_ = fetch(prefix + "step", at::Tensor()).item<int64_t>();
}

void AdamW::set_state(const std::vector<std::vector<at::Tensor>>& moments, int64_t step) {
  if (moments.size() != params_.size()) {
    throw std::invalid_argument("AdamW::set_state got moments of " +
                                std::to_string(moments.size()) + " parameters, it updates " +
                                std::to_string(params_.size()));
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (moments[i].size() != 2 || !moments[i][0].sizes().equals(params_[i].sizes()) ||
        !moments[i][1].sizes().equals(params_[i].sizes())) {
      throw std::invalid_argument("AdamW::set_state: the moments of " + names_[i] +
                                  " do not have its shape " + c10::str(params_[i].sizes()));
    }
    exp_avg_[i].copy_(moments[i][0]);
    exp_avg_sq_[i].copy_(moments[i][1]);
  }
  step_ = step;
}

double learning_rate_at(int step, int total_steps, int warmup_steps, double lr) {
  if (warmup_steps > 0 && step <= warmup_steps) {
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  const double span = std::max(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace dualpipe::train

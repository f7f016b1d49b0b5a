#include "dualpipe/runtime/linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/init.h>

#include <cmath>

#include "dualpipe/runtime/weight_grad_store.h"

namespace dualpipe::runtime {
namespace {

// Accumulates `grad` into `param.grad()` the way AccumulateGrad does for a fresh gradient.
void accumulate(at::Tensor& param, const at::Tensor& grad) {
  at::Tensor& slot = param.mutable_grad();
  if (!slot.defined()) {
    slot = grad;
  } else {
    slot.add_(grad);
  }
}

// The route current when the forward ran (see weight_grad_store.h), kept in the autograd context
// so the backward finds its store on whichever thread autograd runs it.
struct RecordedRoute : torch::CustomClassHolder {
  std::shared_ptr<WeightGradRoute> route;
};

void record_route(torch::autograd::AutogradContext* ctx) {
  auto recorded = c10::make_intrusive<RecordedRoute>();
  recorded->route = WeightGradRouteGuard::current();
  ctx->saved_data["route"] = c10::IValue::make_capsule(std::move(recorded));
}

const WeightGradRoute* recorded_route(torch::autograd::AutogradContext* ctx) {
  const c10::intrusive_ptr<torch::CustomClassHolder> capsule = ctx->saved_data["route"].toCapsule();
  return static_cast<const RecordedRoute*>(capsule.get())->route.get();
}

// The backward of y = x W^T (+ b) for both autograd Functions below: the input gradient now; the
// weight (and bias) gradient now, or pushed to the WeightGradStore when deferral is on for this
// backward (DeferWeightGradGuard::for_backward; then their returned gradients are undefined).
// `bias` may be undefined.
torch::autograd::variable_list linear_backward(const WeightGradRoute* route,
                                               const at::Tensor& input, at::Tensor weight,
                                               at::Tensor bias, const at::Tensor& grad_output) {
  at::Tensor grad_input;
  if (input.requires_grad()) grad_input = grad_output.matmul(weight);
  const bool need_weight = weight.requires_grad();
  const bool need_bias = bias.defined() && bias.requires_grad();
  auto weight_grads = [grad_output, input, need_weight, need_bias] {
    const at::Tensor g = grad_output.reshape({-1, grad_output.size(-1)});
    at::Tensor grad_weight, grad_bias;
    if (need_weight) grad_weight = g.t().mm(input.reshape({-1, input.size(-1)}));
    if (need_bias) grad_bias = g.sum(0);
    return std::make_pair(grad_weight, grad_bias);
  };
  if (WeightGradStore* store = DeferWeightGradGuard::for_backward(route)) {
    store->push([weight_grads, weight, bias]() mutable {
      at::NoGradGuard no_grad;
      auto [grad_weight, grad_bias] = weight_grads();
      if (grad_weight.defined()) accumulate(weight, grad_weight);
      if (grad_bias.defined()) accumulate(bias, grad_bias);
    });
    return {grad_input, at::Tensor(), at::Tensor()};
  }
  auto [grad_weight, grad_bias] = weight_grads();
  return {grad_input, grad_weight, grad_bias};
}

// NOTE: the parameters are kept as IValues rather than SavedVariables so the deferred closure
// can write their .grad(): they are leaves, so this is the parameter itself.
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias) {
    ctx->save_for_backward({input});
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["bias"] = bias;
    record_route(ctx);
    return at::linear(input, weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    return linear_backward(recorded_route(ctx), ctx->get_saved_variables()[0],
                           ctx->saved_data["weight"].toTensor(), ctx->saved_data["bias"].toTensor(),
                           grad_outputs[0]);
  }
};

// Without bias. NOTE: a separate Function because LibTorch 1.13's Function::apply cannot take an
// undefined tensor argument ("tensor does not have a device").
class LinearNoBiasFunction : public torch::autograd::Function<LinearNoBiasFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight) {
    ctx->save_for_backward({input});
    ctx->saved_data["weight"] = weight;
    record_route(ctx);
    return at::linear(input, weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    torch::autograd::variable_list grads =
        linear_backward(recorded_route(ctx), ctx->get_saved_variables()[0],
                        ctx->saved_data["weight"].toTensor(), at::Tensor(), grad_outputs[0]);
    grads.pop_back();  // no bias input
    return grads;
  }
};

}  // namespace

LinearImpl::LinearImpl(const torch::nn::LinearOptions& options_) : options(options_) {
  reset();
}

void LinearImpl::reset() {
  weight =
      register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
}

void LinearImpl::reset_parameters() {
  // NOTE: mirrors torch::nn::LinearImpl::reset_parameters so seeded models match bit for bit.
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));
  if (bias.defined()) {
    int64_t fan_in = 0, fan_out = 0;
    std::tie(fan_in, fan_out) = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
    const double bound = 1 / std::sqrt(static_cast<double>(fan_in));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "dualpipe::runtime::Linear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias() << ")";
}

at::Tensor LinearImpl::forward(const at::Tensor& input) {
  if (!bias.defined()) return LinearNoBiasFunction::apply(input, weight);
  return LinearFunction::apply(input, weight, bias);
}

}  // namespace dualpipe::runtime

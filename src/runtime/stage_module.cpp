#include "dualpipe/runtime/stage_module.h"

#include <torch/csrc/autograd/autograd.h>

#include <stdexcept>

namespace dualpipe::runtime {

std::string to_string(const MicrobatchId& id) {
  return "d" + std::to_string(id.direction) + " s" + std::to_string(id.stage) + " mb" +
         std::to_string(id.microbatch);
}

void StageModule::backward(const MicrobatchId& id, const TensorList& outputs,
                           const TensorList& output_grads) {
  if (!output_grads.empty() && output_grads.size() != outputs.size()) {
    throw std::invalid_argument("backward of " + to_string(id) + ": " +
                                std::to_string(outputs.size()) + " outputs but " +
                                std::to_string(output_grads.size()) + " output gradients");
  }
  TensorList roots, grads;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const at::Tensor& grad = output_grads.empty() ? at::Tensor() : output_grads[i];
    if (!outputs[i].defined() || !outputs[i].requires_grad()) continue;
    if (!output_grads.empty() && !grad.defined()) continue;
    roots.push_back(outputs[i]);
    grads.push_back(grad);
  }
  if (roots.empty()) return;
  torch::autograd::backward(roots, grads);
}

ForwardResult StageModule::overlapped_forward_backward(const ForwardHalf& forward,
                                                       StageModule& backward_stage,
                                                       const BackwardHalf& backward) {
  throw std::logic_error("stage module has no overlapped_forward_backward for " +
                         to_string(forward.id) + " / " + to_string(backward.id));
}

}  // namespace dualpipe::runtime

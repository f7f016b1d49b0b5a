#include "dualpipe/moe/all_to_all.h"

#include <torch/csrc/autograd/custom_function.h>

namespace dualpipe::moe {
namespace {

class AllToAllFunction : public torch::autograd::Function<AllToAllFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            int64_t stream_address, std::vector<int64_t> send_splits,
                            std::vector<int64_t> recv_splits, std::string name) {
    ctx->saved_data["stream"] = stream_address;
    ctx->saved_data["send"] = send_splits;
    ctx->saved_data["recv"] = recv_splits;
    ctx->saved_data["name"] = name;
    ctx->saved_data["row_shape"] = input.sizes().slice(1).vec();
    // NOTE: an empty tensor of the input's dtype and device, for the zeros of a missing gradient.
    ctx->saved_data["like"] = at::empty({0}, input.options());
    auto* stream = reinterpret_cast<CommStream*>(stream_address);
    return stream->all_to_all(input, send_splits, recv_splits, name).wait();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* stream = reinterpret_cast<CommStream*>(ctx->saved_data["stream"].toInt());
    std::vector<int64_t> send = ctx->saved_data["send"].toIntVector();
    std::vector<int64_t> recv = ctx->saved_data["recv"].toIntVector();
    std::string name = ctx->saved_data["name"].toStringRef() + " backward";
    // NOTE: every rank must run this exchange, so an undefined gradient is sent as zeros.
    at::Tensor grad = grads[0];
    if (!grad.defined()) {
      std::vector<int64_t> shape = {0};
      for (int64_t s : recv) shape[0] += s;
      for (int64_t s : ctx->saved_data["row_shape"].toIntVector()) shape.push_back(s);
      grad = at::zeros(shape, ctx->saved_data["like"].toTensor().options());
    }
    at::Tensor grad_input = stream->all_to_all(grad, recv, send, name).wait();
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_to_all(CommStream& stream, const at::Tensor& input,
                      const std::vector<int64_t>& send_splits,
                      const std::vector<int64_t>& recv_splits, const std::string& name) {
  return AllToAllFunction::apply(input, reinterpret_cast<int64_t>(&stream), send_splits,
                                 recv_splits, name);
}

}  // namespace dualpipe::moe

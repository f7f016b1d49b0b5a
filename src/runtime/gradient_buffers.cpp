#include "dualpipe/runtime/gradient_buffers.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace dualpipe::runtime {

FlatGradients flatten_gradients(const std::vector<at::Tensor>& params) {
  FlatGradients flat;
  std::vector<at::TensorOptions> bucket_options;
  std::vector<std::vector<at::Tensor>> parts;
  std::vector<int64_t> sizes;
  for (const at::Tensor& p : params) {
    const at::TensorOptions options = p.options();
    int bucket = 0;
    while (bucket < static_cast<int>(bucket_options.size()) &&
           (bucket_options[bucket].dtype() != options.dtype() ||
            bucket_options[bucket].device() != options.device())) {
      ++bucket;
    }
    if (bucket == static_cast<int>(bucket_options.size())) {
      bucket_options.push_back(options);
      parts.emplace_back();
      sizes.push_back(0);
    }
    flat.bucket_of.push_back(bucket);
    flat.offset_of.push_back(sizes[bucket]);
    sizes[bucket] += p.numel();
    parts[bucket].push_back(p.grad().defined() ? p.grad().reshape(-1)
                                               : at::zeros({p.numel()}, options));
  }
  for (const std::vector<at::Tensor>& bucket_parts : parts) {
    flat.buckets.push_back(at::cat(bucket_parts));
  }
  return flat;
}

void unflatten_gradients(std::vector<at::Tensor>& params, const FlatGradients& flat,
                         GradientWrite how) {
  if (flat.bucket_of.size() != params.size() || flat.offset_of.size() != params.size()) {
    throw std::invalid_argument("unflatten_gradients: the flat gradients describe " +
                                std::to_string(flat.bucket_of.size()) + " parameters, got " +
                                std::to_string(params.size()));
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    at::Tensor& p = params[i];
    const int bucket = flat.bucket_of[i];
    if (bucket < 0 || bucket >= static_cast<int>(flat.buckets.size()) ||
        flat.offset_of[i] + p.numel() > flat.buckets[bucket].numel()) {
      throw std::invalid_argument("unflatten_gradients: parameter " + std::to_string(i) + " (" +
                                  std::to_string(p.numel()) + " elements) lies outside its buffer");
    }
    const at::Tensor part =
        flat.buckets[bucket].narrow(0, flat.offset_of[i], p.numel()).view(p.sizes());
    at::Tensor& grad = p.mutable_grad();
    if (!grad.defined()) {
      grad = part.clone();
    } else if (how == GradientWrite::kAdd) {
      grad.add_(part);
    } else {
      grad.copy_(part);
    }
  }
}

void reduce_gradients(std::vector<at::Tensor>& params,
                      const std::function<void(std::vector<at::Tensor>& buckets)>& reduce) {
  FlatGradients flat = flatten_gradients(params);
  if (flat.buckets.empty()) return;
  reduce(flat.buckets);
  unflatten_gradients(params, flat, GradientWrite::kAssign);
}

std::vector<at::Tensor> take_gradients(std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> earlier;
  earlier.reserve(params.size());
  for (at::Tensor& p : params) {
    earlier.push_back(p.grad());
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
  return earlier;
}

void restore_gradients(std::vector<at::Tensor>& params, std::vector<at::Tensor>& earlier,
                       bool drop_new) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    at::Tensor& grad = params[i].mutable_grad();
    if (!earlier[i].defined()) {
      if (drop_new) grad = at::Tensor();
    } else if (drop_new || !grad.defined()) {
      grad = earlier[i];
    } else {
      grad = earlier[i].add_(grad);
    }
  }
}

}  // namespace dualpipe::runtime

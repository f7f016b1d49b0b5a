#include "dualpipe/moe/expert_replicas.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace dualpipe::moe {
namespace {

std::vector<at::Tensor> expert_parameters(MoELayerImpl& layer, int64_t slot) {
  return layer.local_expert(slot).parameters();
}

int64_t numel_of(const std::vector<at::Tensor>& tensors) {
  int64_t n = 0;
  for (const at::Tensor& t : tensors) n += t.numel();
  return n;
}

// Every expert has a slot, so extra slots mean some expert has several.
bool has_replicated_expert(const MoELayerImpl& layer) {
  return layer.config().num_physical_experts() > layer.config().num_experts;
}

void wait_for(const runtime::WorkPtr& work, std::chrono::milliseconds timeout, const char* what) {
  try {
    work->wait(timeout);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(what) + " over the EP group failed: " + e.what());
  }
}

// The rows of `flat` starting at `offset`, reshaped into `like`'s shape.
at::Tensor take(const at::Tensor& flat, int64_t& offset, const at::Tensor& like) {
  at::Tensor piece = flat.narrow(0, offset, like.numel()).view_as(like);
  offset += like.numel();
  return piece;
}

}  // namespace

void sum_replica_gradients(const std::vector<MoELayerImpl*>& layers,
                           const runtime::CommunicatorPtr& ep_group,
                           std::chrono::milliseconds timeout) {
  std::vector<MoELayerImpl*> replicated;
  for (MoELayerImpl* layer : layers) {
    if (has_replicated_expert(*layer)) replicated.push_back(layer);
  }
  if (replicated.empty()) return;
  // One row per (layer, logical expert): its summed gradient, then how many replicas had one.
  std::vector<int64_t> layer_offset;
  int64_t total = 0;
  at::TensorOptions options;
  for (MoELayerImpl* layer : replicated) {
    const std::vector<at::Tensor> params = expert_parameters(*layer, 0);
    options = params.front().options();
    layer_offset.push_back(total);
    total += layer->config().num_experts * (numel_of(params) + 1);
  }
  at::NoGradGuard no_grad;
  at::Tensor rows = at::zeros({total}, options);
  for (size_t i = 0; i < replicated.size(); ++i) {
    MoELayerImpl& layer = *replicated[i];
    const int64_t width = numel_of(expert_parameters(layer, 0)) + 1;
    for (int64_t slot = 0; slot < layer.num_local_experts(); ++slot) {
      const int logical = layer.physical_to_logical()[layer.first_expert() + slot];
      at::Tensor row = rows.narrow(0, layer_offset[i] + logical * width, width);
      bool any = false;
      int64_t offset = 0;
      for (const at::Tensor& p : expert_parameters(layer, slot)) {
        at::Tensor piece = take(row, offset, p);
        if (p.grad().defined()) {
          piece.add_(p.grad());
          any = true;
        }
      }
      if (any) row[width - 1].add_(1);
    }
  }
  if (ep_group && ep_group->getSize() > 1) {
    std::vector<at::Tensor> tensors = {rows};
    wait_for(ep_group->allreduce(tensors), timeout, "summing expert replica gradients");
  }
  for (size_t i = 0; i < replicated.size(); ++i) {
    MoELayerImpl& layer = *replicated[i];
    const int64_t width = numel_of(expert_parameters(layer, 0)) + 1;
    for (int64_t slot = 0; slot < layer.num_local_experts(); ++slot) {
      const int logical = layer.physical_to_logical()[layer.first_expert() + slot];
      const at::Tensor row = rows.narrow(0, layer_offset[i] + logical * width, width);
      const bool any = row[width - 1].item<double>() > 0;
      int64_t offset = 0;
      for (at::Tensor& p : expert_parameters(layer, slot)) {
        at::Tensor piece = take(row, offset, p);
        p.mutable_grad() = any ? piece.clone() : at::Tensor();
      }
    }
  }
}

int move_experts(const std::vector<MoELayerImpl*>& layers,
                 const std::vector<std::vector<int>>& new_maps, const CompanionTensors& companions,
                 const runtime::CommunicatorPtr& ep_group, std::chrono::milliseconds timeout) {
  if (new_maps.size() != layers.size()) {
    throw std::invalid_argument("move_experts got " + std::to_string(new_maps.size()) +
                                " placements for " + std::to_string(layers.size()) + " layers");
  }
  std::vector<size_t> changed;
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i]->check_physical_to_logical(new_maps[i]);
    if (new_maps[i] != layers[i]->physical_to_logical()) changed.push_back(i);
  }
  if (changed.empty()) return 0;

  // What travels with one expert slot: its parameters, then each parameter's companions.
  auto slot_tensors = [&](MoELayerImpl& layer, int64_t slot) {
    std::vector<at::Tensor> params = expert_parameters(layer, slot);
    std::vector<at::Tensor> all = params;
    for (const at::Tensor& p : params) {
      std::vector<at::Tensor> extra = companions ? companions(p) : std::vector<at::Tensor>{};
      for (const at::Tensor& c : extra) {
        if (!c.sizes().equals(p.sizes())) {
          throw std::invalid_argument("move_experts: a companion tensor of shape " +
                                      c10::str(c.sizes()) + " for an expert parameter of shape " +
                                      c10::str(p.sizes()));
        }
      }
      all.insert(all.end(), extra.begin(), extra.end());
    }
    return all;
  };

  at::NoGradGuard no_grad;
  std::vector<at::Tensor> local_rows;
  std::vector<int64_t> layer_offset, layer_width;
  int64_t per_rank = 0;
  for (size_t i : changed) {
    MoELayerImpl& layer = *layers[i];
    const int64_t width = numel_of(slot_tensors(layer, 0));
    layer_offset.push_back(per_rank);
    layer_width.push_back(width);
    per_rank += layer.num_local_experts() * width;
    for (int64_t slot = 0; slot < layer.num_local_experts(); ++slot) {
      std::vector<at::Tensor> parts = slot_tensors(layer, slot);
      if (numel_of(parts) != width) {
        throw std::invalid_argument("move_experts: expert slots of one layer differ in size");
      }
      for (const at::Tensor& t : parts) local_rows.push_back(t.reshape({-1}));
    }
  }
  at::Tensor local = at::cat(local_rows);
  const int ep_size = layers[changed.front()]->ep_size();
  std::vector<at::Tensor> gathered;
  if (ep_group && ep_group->getSize() > 1) {
    if (ep_group->getSize() != ep_size) {
      throw std::invalid_argument("move_experts: the layers have ep_size " +
                                  std::to_string(ep_size) + ", the EP group has " +
                                  std::to_string(ep_group->getSize()) + " ranks");
    }
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < ep_size; ++r) outputs[0].push_back(at::empty_like(local));
    std::vector<at::Tensor> inputs = {local};
    wait_for(ep_group->allgather(outputs, inputs), timeout, "moving experts");
    gathered = outputs[0];
  } else {
    gathered = {local};
  }

  for (size_t c = 0; c < changed.size(); ++c) {
    MoELayerImpl& layer = *layers[changed[c]];
    const std::vector<int>& new_map = new_maps[changed[c]];
    const int64_t local_slots = layer.num_local_experts();
    for (int64_t slot = 0; slot < local_slots; ++slot) {
      const int logical = new_map[layer.first_expert() + slot];
      const int source = layer.replicas_of(logical).front();
      const at::Tensor& from = gathered[source / local_slots];
      at::Tensor row =
          from.narrow(0, layer_offset[c] + (source % local_slots) * layer_width[c], layer_width[c]);
      int64_t offset = 0;
      for (at::Tensor& t : slot_tensors(layer, slot)) t.copy_(take(row, offset, t));
    }
    layer.set_physical_to_logical(new_map);
  }
  return static_cast<int>(changed.size());
}

}  // namespace dualpipe::moe

#include "dualpipe/moe/expert_replicas.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "dualpipe/check.h"

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

// The rows of `flat` starting at `offset`, reshaped into `like`'s shape.
at::Tensor take(const at::Tensor& flat, int64_t& offset, const at::Tensor& like) {
  at::Tensor piece = flat.narrow(0, offset, like.numel()).view_as(like);
  offset += like.numel();
  return piece;
}

// What travels with one expert slot: its parameters, then each parameter's companions.
std::vector<at::Tensor> slot_tensors(MoELayerImpl& layer, int64_t slot,
                                     const CompanionTensors& companions) {
  std::vector<at::Tensor> params = expert_parameters(layer, slot);
  std::vector<at::Tensor> all = params;
  for (const at::Tensor& p : params) {
    std::vector<at::Tensor> extra = companions ? companions(p) : std::vector<at::Tensor>{};
    for (const at::Tensor& c : extra) {
      DUALPIPE_CHECK(c.sizes().equals(p.sizes()), "move_experts: a companion tensor of shape ",
                     c.sizes(), " for an expert parameter of shape ", p.sizes());
    }
    all.insert(all.end(), extra.begin(), extra.end());
  }
  return all;
}

// The local expert slots of the changed layers, flattened into one tensor: layer after layer,
// slot after slot, each slot's slot_tensors() end to end. The same on every EP rank but for the
// values, so the rows of all ranks line up.
struct PackedSlots {
  at::Tensor local;
  std::vector<int64_t> layer_offset;  // per changed layer: where its first slot starts
  std::vector<int64_t> layer_width;   // per changed layer: the length of one slot
};

PackedSlots pack_slots(const std::vector<MoELayerImpl*>& layers, const std::vector<size_t>& changed,
                       const CompanionTensors& companions) {
  PackedSlots packed;
  std::vector<at::Tensor> local_rows;
  int64_t per_rank = 0;
  for (size_t i : changed) {
    MoELayerImpl& layer = *layers[i];
    const int64_t width = numel_of(slot_tensors(layer, 0, companions));
    packed.layer_offset.push_back(per_rank);
    packed.layer_width.push_back(width);
    per_rank += layer.num_local_experts() * width;
    for (int64_t slot = 0; slot < layer.num_local_experts(); ++slot) {
      std::vector<at::Tensor> parts = slot_tensors(layer, slot, companions);
      DUALPIPE_CHECK(numel_of(parts) == width,
                     "move_experts: expert slots of one layer differ in size");
      for (const at::Tensor& t : parts) local_rows.push_back(t.reshape({-1}));
    }
  }
  packed.local = at::cat(local_rows);
  return packed;
}

// Every EP rank's `local`, indexed by EP rank: one allgather over `ep_group`, none where the group
// is null or has one rank.
std::vector<at::Tensor> gather_over_ep_group(const at::Tensor& local, int ep_size,
                                             const runtime::CommunicatorPtr& ep_group,
                                             const runtime::GroupMembers& ep_members,
                                             std::chrono::milliseconds timeout) {
  if (!ep_group || ep_group->getSize() <= 1) return {local};
  DUALPIPE_CHECK(ep_group->getSize() == ep_size, "move_experts: the layers have ep_size ", ep_size,
                 ", the EP group has ", ep_group->getSize(), " ranks");
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < ep_size; ++r) outputs[0].push_back(at::empty_like(local));
  std::vector<at::Tensor> inputs = {local};
  runtime::wait_collective(ep_group->allgather(outputs, inputs), *ep_group, ep_members,
                           "allgather of the moved experts over EP", timeout);
  return outputs[0];
}

// Copies into each local slot of `layer` its new logical expert's slot as packed by that expert's
// first current replica (`gathered` indexed by EP rank), then routes `layer` by `new_map`.
void unpack_into_new_placement(MoELayerImpl& layer, const std::vector<int>& new_map,
                               const std::vector<at::Tensor>& gathered, int64_t layer_offset,
                               int64_t layer_width, const CompanionTensors& companions) {
  const int64_t local_slots = layer.num_local_experts();
  for (int64_t slot = 0; slot < local_slots; ++slot) {
    const int logical = new_map[layer.first_expert() + slot];
    const int source = layer.replicas_of(logical).front();
    const at::Tensor& from = gathered[source / local_slots];
    at::Tensor row =
        from.narrow(0, layer_offset + (source % local_slots) * layer_width, layer_width);
    int64_t offset = 0;
    for (at::Tensor& t : slot_tensors(layer, slot, companions)) t.copy_(take(row, offset, t));
  }
  layer.set_physical_to_logical(new_map);
}

}  // namespace

void sum_replica_gradients(const std::vector<MoELayerImpl*>& layers,
                           const runtime::CommunicatorPtr& ep_group,
                           std::chrono::milliseconds timeout,
                           const runtime::GroupMembers& ep_members) {
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
    runtime::wait_collective(ep_group->allreduce(tensors), *ep_group, ep_members,
                             "allreduce of the expert replicas' gradients over EP", timeout);
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
                 const runtime::CommunicatorPtr& ep_group, std::chrono::milliseconds timeout,
                 const runtime::GroupMembers& ep_members) {
  DUALPIPE_CHECK(new_maps.size() == layers.size(), "move_experts got ", new_maps.size(),
                 " placements for ", layers.size(), " layers");
  std::vector<size_t> changed;
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i]->check_physical_to_logical(new_maps[i]);
    if (new_maps[i] != layers[i]->physical_to_logical()) changed.push_back(i);
  }
  if (changed.empty()) return 0;

  at::NoGradGuard no_grad;
  const PackedSlots packed = pack_slots(layers, changed, companions);
  const std::vector<at::Tensor> gathered = gather_over_ep_group(
      packed.local, layers[changed.front()]->ep_size(), ep_group, ep_members, timeout);
  for (size_t c = 0; c < changed.size(); ++c) {
    unpack_into_new_placement(*layers[changed[c]], new_maps[changed[c]], gathered,
                              packed.layer_offset[c], packed.layer_width[c], companions);
  }
  return static_cast<int>(changed.size());
}

}  // namespace dualpipe::moe

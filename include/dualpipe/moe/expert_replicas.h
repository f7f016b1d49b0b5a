#pragma once
// The replicas of a logical expert (see moe_layer.h) stay identical: after backward their weight
// gradients are summed, and when the placement changes (EPLB) every physical slot receives the
// weights, and the optimiser state, of its new logical expert from a current replica.
//
// Both functions are collectives over the EP group: every EP rank of a group passes its layers in
// the same order, with the same placements (the layers of one pipeline position).

#include <chrono>
#include <functional>
#include <vector>

#include "dualpipe/moe/moe_layer.h"
#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/torch_compat.h"

namespace dualpipe::moe {

// Gives every replica of each logical expert the sum of the weight gradients of all its replicas
// (on this rank and, over `ep_group`, on the other EP ranks), so an optimiser step leaves them
// equal. An expert none of whose replicas has a gradient keeps undefined gradients, as a single
// expert that received no token does. Layers whose experts have one replica each are complete
// already and skipped; when no layer has a replicated expert nothing is communicated.
// `ep_group` may be null for ep_size 1. Throws std::runtime_error naming the collective when it
// fails or times out.
// `ep_members` (who is in ep_group) only names the peers in errors.
void sum_replica_gradients(const std::vector<MoELayerImpl*>& layers,
                           const runtime::CommunicatorPtr& ep_group,
                           std::chrono::milliseconds timeout,
                           const runtime::GroupMembers& ep_members = {});

// Tensors that move together with an expert parameter, e.g. an optimiser's moments of it. Each
// has the parameter's shape; every parameter has the same number of them.
using CompanionTensors = std::function<std::vector<at::Tensor>(const at::Tensor& parameter)>;

// Puts layers[i] on placement new_maps[i] ([physical slot] -> logical expert): each local slot
// gets, bit for bit, the weights and companion tensors of its new logical expert as held by that
// expert's first replica under the current placement, wherever it lives; then the layer routes by
// the new map. One allgather over `ep_group` of the changed layers' local experts (none when no
// placement changes). Call between steps, with no gradients pending. Returns how many layers
// changed. Throws std::invalid_argument for a map the layer rejects (before any communication),
// std::runtime_error when the collective fails.
int move_experts(const std::vector<MoELayerImpl*>& layers,
                 const std::vector<std::vector<int>>& new_maps, const CompanionTensors& companions,
                 const runtime::CommunicatorPtr& ep_group, std::chrono::milliseconds timeout,
                 const runtime::GroupMembers& ep_members = {});

}  // namespace dualpipe::moe

#pragma once
// Parameter gradients as flat buffers, for the collectives that sum or average them (mirror
// copies, data-parallel replicas, expert-parallel replicas) and for setting one step's gradients
// aside (gradient accumulation). One helper per concept; every caller in the runtime and the
// trainer uses these.

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace dualpipe::runtime {

// The gradients of a list of parameters, concatenated into one 1-D buffer per (dtype, device)
// in the order the parameters list them (a model of fp32 and fp64 parameters gives two buffers;
// nothing is converted). A parameter without a gradient contributes zeros. `buckets` are new
// tensors the caller owns; `bucket_of[i]` and `offset_of[i]` say where parameter i lies.
struct FlatGradients {
  std::vector<at::Tensor> buckets;
  std::vector<int> bucket_of;
  std::vector<int64_t> offset_of;
};

// Flattens the gradients of `params` (copies). Pure; no communication.
FlatGradients flatten_gradients(const std::vector<at::Tensor>& params);

// How unflatten_gradients writes each parameter's slice of the buffers into its .grad().
enum class GradientWrite {
  kAssign,  // the gradient becomes the slice's values (a parameter without one gets one)
  kAdd,     // the slice is added (a parameter without a gradient gets a copy of the slice)
};

// Writes `flat` (a FlatGradients of these `params`, possibly reduced since) back into the
// parameters' gradients. Throws std::invalid_argument if the layout does not fit `params`.
void unflatten_gradients(std::vector<at::Tensor>& params, const FlatGradients& flat,
                         GradientWrite how);

// Flattens, lets `reduce` change the buckets in place (e.g. an allreduce over a group, then a
// division), and assigns the result back: the one way the runtime reduces gradients. `reduce`
// is called once, on the caller's thread, with every bucket; what it throws propagates and the
// gradients are then unchanged.
void reduce_gradients(std::vector<at::Tensor>& params,
                      const std::function<void(std::vector<at::Tensor>& buckets)>& reduce);

// Moves every parameter's gradient out, leaving it undefined, so a step then produces only its
// own gradients (see Pipeline::step). Returns what was there, undefined where nothing was.
std::vector<at::Tensor> take_gradients(std::vector<at::Tensor>& params);

// Puts back what take_gradients() moved out: added to the gradients produced since, or, with
// `drop_new` (the step failed), instead of them.
void restore_gradients(std::vector<at::Tensor>& params, std::vector<at::Tensor>& earlier,
                       bool drop_new);

}  // namespace dualpipe::runtime

#include "dualpipe/runtime/local_batch.h"

#include <ATen/ATen.h>

#include <stdexcept>

#include "dualpipe/schedule/registry.h"

namespace dualpipe::runtime {
namespace {

// The rows of `directions` from each global tensor, in direction order.
TensorList rows_of_directions(const TensorList& tensors, const char* what,
                              const std::vector<int>& directions, int num_microbatches,
                              int per_direction) {
  TensorList result;
  if (directions.empty()) return result;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (!t.defined() || t.dim() == 0 || t.size(0) % num_microbatches != 0) {
      throw std::invalid_argument(
          std::string("local_batch: ") + what + "[" + std::to_string(i) + "] has batch size " +
          (t.defined() && t.dim() > 0 ? std::to_string(t.size(0)) : "none") +
          ", which does not split into num_microbatches=" + std::to_string(num_microbatches) +
          " equal micro-batches");
    }
    const int64_t rows = t.size(0) / num_microbatches * per_direction;
    TensorList parts;
    for (int d : directions) parts.push_back(t.narrow(0, d * rows, rows));
    result.push_back(parts.size() == 1 ? parts[0] : at::cat(parts, 0));
  }
  return result;
}

}  // namespace

LocalBatch local_batch(const schedule::Placement& placement, int rank, int num_microbatches,
                       const TensorList& inputs, const TensorList& labels) {
  const int num_directions = placement.num_directions();
  if (num_microbatches < num_directions || num_microbatches % num_directions != 0) {
    throw std::invalid_argument(
        "local_batch: num_microbatches must be a positive multiple of the schedule's " +
        std::to_string(num_directions) +
        " direction(s), got num_microbatches=" + std::to_string(num_microbatches));
  }
  if (rank < 0 || rank >= placement.num_ranks()) {
    throw std::out_of_range("local_batch: rank " + std::to_string(rank) + " is outside [0, " +
                            std::to_string(placement.num_ranks()) + ")");
  }
  const int per_direction = num_microbatches / num_directions;
  const std::vector<int> ending = placement.directions_ending_on(rank);
  LocalBatch batch;
  batch.inputs = rows_of_directions(inputs, "inputs", placement.directions_starting_on(rank),
                                    num_microbatches, per_direction);
  batch.labels = rows_of_directions(labels, "labels", ending, num_microbatches, per_direction);
  for (int d : ending) {
    for (int m = 0; m < per_direction; ++m)
      batch.loss_microbatches.push_back(d * per_direction + m);
  }
  return batch;
}

LocalBatch local_batch(const std::string& schedule_name, int num_ranks, int rank,
                       int num_microbatches, const TensorList& inputs, const TensorList& labels) {
  return local_batch(schedule::schedule_placement(schedule_name, num_ranks), rank, num_microbatches,
                     inputs, labels);
}

}  // namespace dualpipe::runtime

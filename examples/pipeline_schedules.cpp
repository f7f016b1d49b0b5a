// The same stage modules under the other schedules: 1F1B, ZB1P (zero bubble) or GPipe.
//
//   build/bin/dualpipe launch -n 2 -- build/bin/dualpipe_example_pipeline zb1p
//
// A single-direction schedule puts model stage r on rank r: rank 0 takes the inputs, the last
// rank the labels and the loss. Pipeline::stages_for and local_batch answer those questions for
// any schedule, so this program differs from the DualPipe example only in how it is built.

#include <torch/optim/sgd.h>

#include <iostream>
#include <string>

#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/runtime/rendezvous.h"
#include "mlp_stage.h"

namespace rt = dualpipe::runtime;

int main(int argc, char** argv) {
  const std::string schedule = argc > 1 ? argv[1] : "zb1p";  // 1f1b, zb1p or gpipe
  constexpr int kMicrobatches = 8, kRowsPerMicrobatch = 4, kHidden = 32, kSteps = 30;
  rt::DistributedContext job = rt::init_distributed();
  const int rank = job.env.rank, num_ranks = job.env.world_size;

  std::vector<rt::StagePtr> modules;  // one per rank here; a vector for schedules with more
  std::vector<at::Tensor> parameters;
  for (const auto& id : rt::Pipeline::stages_for(schedule, num_ranks, rank)) {
    modules.push_back(examples::make_stage(id.stage, kHidden));
    for (const at::Tensor& p : modules.back()->parameters()) parameters.push_back(p);
  }
  rt::Pipeline pipeline(schedule, modules, job.world);
  torch::optim::SGD optimizer(parameters, torch::optim::SGDOptions(0.05));
  const rt::Criterion criterion = examples::mse_criterion(kMicrobatches);

  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < kSteps; ++step) {
    auto [x, y] = examples::regression_batch(step, kMicrobatches * kRowsPerMicrobatch, kHidden);
    rt::LocalBatch batch = rt::local_batch(schedule, num_ranks, rank, kMicrobatches, {x}, {y});
    optimizer.zero_grad();
    rt::StepResult result = pipeline.step(batch.inputs, kMicrobatches, criterion, batch.labels);
    optimizer.step();
    if (result.loss.defined()) {  // only on the last rank
      last_loss = result.loss.sum().item<double>();
      if (step == 0) first_loss = last_loss;
      if (step % 10 == 0 || step == kSteps - 1) {
        std::cout << schedule << " rank " << rank << " step " << step << " loss " << last_loss
                  << std::endl;
      }
    }
  }
  // Exits non-zero if training did not reduce the loss (on the rank that sees it).
  const bool sees_loss = rt::Pipeline::takes_labels(schedule, num_ranks, rank);
  return !sees_loss || last_loss < first_loss ? 0 : 1;
}

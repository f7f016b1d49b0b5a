// Start here: train a two-stage model with DualPipe on two local ranks.
//
//   build/bin/dualpipe launch -n 2 -- build/bin/dualpipe_example_dualpipe
//
// DualPipe feeds micro-batches from both ends of the pipeline at once. Rank r holds model stage r
// for the micro-batches entering at rank 0 and a copy of stage R-1-r for those entering at rank
// R-1, so every rank builds two stage modules; step() sums the two copies' gradients.

#include <torch/optim/sgd.h>

#include <iostream>

#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "dualpipe/runtime/rendezvous.h"
#include "mlp_stage.h"

namespace rt = dualpipe::runtime;

int main() {
  constexpr int kMicrobatches = 8, kRowsPerMicrobatch = 4, kHidden = 32, kSteps = 30;
  // Joins the job `dualpipe launch` (or torchrun, mpirun, srun) started: RANK, WORLD_SIZE, ...
  rt::DistributedContext job = rt::init_distributed();
  const int rank = job.env.rank, num_ranks = job.env.world_size;

  // The model stages this rank holds, in the order DualPipe expects them.
  std::vector<rt::StagePtr> modules;
  std::vector<at::Tensor> parameters;
  for (const auto& id : rt::Pipeline::stages_for("dualpipe", num_ranks, rank)) {
    modules.push_back(examples::make_stage(id.stage, kHidden));
    for (const at::Tensor& p : modules.back()->parameters()) parameters.push_back(p);
  }
  rt::DualPipe pipeline(modules[0], modules[1], job.world);
  torch::optim::SGD optimizer(parameters, torch::optim::SGDOptions(0.05));

  const rt::Criterion criterion = examples::mse_criterion(kMicrobatches);

  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < kSteps; ++step) {
    // Every rank draws the same global batch; local_batch picks this rank's share (DualPipe:
    // rank 0 the first half's inputs and the second half's labels, rank R-1 the reverse).
    auto [x, y] = examples::regression_batch(step, kMicrobatches * kRowsPerMicrobatch, kHidden);
    rt::LocalBatch batch = rt::local_batch("dualpipe", num_ranks, rank, kMicrobatches, {x}, {y});

    optimizer.zero_grad();
    rt::StepResult result = pipeline.step(batch.inputs, kMicrobatches, criterion, batch.labels);
    optimizer.step();

    // The losses of the micro-batches whose last stage is here (both ends of DualPipe).
    if (result.loss.defined()) {
      last_loss = result.loss.mean().item<double>() * kMicrobatches;  // mean squared error
      if (step == 0) first_loss = last_loss;
      if (step % 10 == 0 || step == kSteps - 1) {
        std::cout << "rank " << rank << " step " << step << " loss " << last_loss << std::endl;
      }
    }
  }
  // NOTE: exits non-zero if training did not reduce the loss, so the example doubles as a test.
  return last_loss < first_loss ? 0 : 1;
}

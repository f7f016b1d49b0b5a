// A rank program for tests/train/train_cli_test.cpp, started by `dualpipe launch`:
//   dualpipe_train_worker CONFIG.json NONFINITE_STEP
// trains CONFIG.json (a TrainConfig as JSON) with train_rank, like a rank of `dualpipe train`,
// and a StepHook that makes a micro-batch loss NaN at step NONFINITE_STEP (0: never), as a
// diverging run would. Exits 3 when the run stopped on a non-finite loss (as `dualpipe train`
// does), 0 when it finished or was stopped, 1 on an error. Not a gtest.
#include <algorithm>
#include <cmath>
#include <csignal>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "dualpipe/runtime/rendezvous.h"
#include "dualpipe/train/train_config.h"
#include "dualpipe/train/trainer.h"

namespace {

// NOTE: a signal handler can only reach static storage. As in `dualpipe train`, SIGTERM (which
// the launcher sends the other ranks once one has exited non-zero) only asks for a stop at the
// next step boundary, so a rank that is reporting the non-finite loss is not cut short.
volatile std::sig_atomic_t g_stop_requested = 0;

extern "C" void request_stop(int) {
  g_stop_requested = 1;
}

// Makes the loss of this rank's second micro-batch (its only one, if it has one) NaN at one step.
class NonFiniteAtStep : public dualpipe::train::StepHook {
 public:
  explicit NonFiniteAtStep(int step) : step_(step) {}
  void before_loss_check(int step, const std::vector<int>& /*microbatches*/,
                         std::vector<double>& losses) override {
    if (step != step_ || losses.empty()) return;
    losses[std::min<std::size_t>(1, losses.size() - 1)] = NAN;
  }

 private:
  int step_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " CONFIG.json NONFINITE_STEP, got " << argc - 1
              << " arguments\n";
    return 1;
  }
  try {
    const dualpipe::train::TrainConfig config = dualpipe::train::load_config_file(argv[1]);
    NonFiniteAtStep hook(std::stoi(argv[2]));
    struct sigaction action = {};
    action.sa_handler = request_stop;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    dualpipe::runtime::DistributedContext context = dualpipe::runtime::init_distributed();
    dualpipe::train::RunControl control;
    control.stop_requested = &g_stop_requested;
    control.step_hook = &hook;
    control.out = &std::cout;
    const dualpipe::train::RunResult result = dualpipe::train::train_rank(config, context, control);
    return result.outcome == dualpipe::train::RunOutcome::kNonFinite ? 3 : 0;
  } catch (const std::exception& e) {
    std::cerr << "dualpipe_train_worker: " << e.what() << "\n";
    return 1;
  }
}

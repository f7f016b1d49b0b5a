// A rank program for the launcher tests: `launch_worker MODE`, started by `dualpipe launch`.
//   allreduce: join, allreduce (rank + 1), print the sum; exit 0.
//   exit:      join; rank 1 exits with status 3 while the others wait in an allreduce.
//   kill:      join; rank 1 kills itself with SIGKILL while the others wait in an allreduce.
//   hang:      join; rank 1 sleeps while the others wait in an allreduce until their timeout.
// Not a gtest: tests/runtime/launch_test.cpp runs it through the `dualpipe` binary.
#include <ATen/ATen.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>

#include "dualpipe/runtime/rendezvous.h"

namespace {

double allreduce_sum(dualpipe::runtime::Communicator& world, int rank) {
  std::vector<at::Tensor> tensors = {at::full({4}, static_cast<double>(rank + 1), at::kDouble)};
  world.allreduce(tensors)->wait();
  return tensors[0][0].item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "allreduce";
  int rank = -1;
  try {
    dualpipe::runtime::CommunicatorOptions options;
    options.timeout = std::chrono::seconds(5);
    dualpipe::runtime::DistributedContext context = dualpipe::runtime::init_distributed(options);
    rank = context.env.rank;
    const double sum = allreduce_sum(*context.world, rank);
    std::cout << "rank " << rank << " of " << context.env.world_size << " joined via "
              << context.env.launcher << ", allreduce sum " << sum << std::endl;
    std::cerr << "rank " << rank << " stderr ";  // Partial line, finished below.
    std::cerr << "line" << std::endl;
    if (mode == "allreduce") return 0;
    if (rank == 1) {
      if (mode == "exit") {
        std::cout << "rank 1 exiting with status 3" << std::endl;
        std::exit(3);
      }
      if (mode == "kill") {
        std::cout << "rank 1 killing itself" << std::endl;
        std::raise(SIGKILL);
      }
      if (mode == "hang") {
        ::sleep(3600);
        return 0;
      }
    }
    allreduce_sum(*context.world, rank);
    std::cerr << "rank " << rank << ": second allreduce unexpectedly completed" << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "rank " << rank << " failed: " << e.what() << std::endl;
    return 1;
  }
}

// `dualpipe launch -n N [--master-port P] [--timeout S] -- PROGRAM ARGS...`: start N local ranks.
#include <string>
#include <vector>

#include "command.h"
#include "dualpipe/runtime/launcher.h"

namespace dualpipe::cli {

Command add_launch_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "launch",
      "Start N local ranks of PROGRAM (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, "
      "MASTER_ADDR=127.0.0.1, MASTER_PORT set as torchrun does), prefix their output with the "
      "rank, and stop all of them when one fails");
  auto options = std::make_shared<runtime::LaunchOptions>();
  auto grace_s = std::make_shared<double>(3.0);
  sub->add_option("-n,--nproc", options->num_ranks, "Number of ranks to start")
      ->required()
      ->check(CLI::PositiveNumber);
  sub->add_option("--master-port", options->master_port, "Rendezvous port (default: a free port)")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--timeout", options->timeout_s,
                  "Communication timeout of the ranks in seconds (exported as DUALPIPE_TIMEOUT)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--grace", *grace_s,
                  "Seconds between SIGTERM and SIGKILL when stopping the other ranks")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("command", options->command, "PROGRAM ARGS... (after --)")->required();
  return {sub, [options, grace_s] {
            options->grace_period =
                std::chrono::milliseconds(static_cast<long long>(*grace_s * 1000));
            return runtime::launch_local(*options);
          }};
}

}  // namespace dualpipe::cli

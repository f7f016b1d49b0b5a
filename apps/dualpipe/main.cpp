// dualpipe: the command-line entry point. Subcommands live one per file.
#include <exception>
#include <iostream>
#include <vector>

#include "command.h"
#include "dualpipe/runtime/launcher.h"
#include "dualpipe/schedule/allocator_tuning.h"

namespace dualpipe::cli {
// Declared here, defined in <name>_command.cpp.
}  // namespace dualpipe::cli

int main(int argc, char** argv) {
  dualpipe::schedule::tune_allocator_for_large_schedules();
  using namespace dualpipe::cli;
  CLI::App app{"dualpipe: bidirectional pipeline-parallel training (DualPipe) on LibTorch"};
  app.require_subcommand(1);
  std::vector<Command> commands = {add_bench_command(app),    add_eplb_command(app),
                                   add_generate_command(app), add_launch_command(app),
                                   add_plan_command(app),     add_sim_command(app),
                                   add_train_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const Command& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const std::exception& e) {
      std::cerr << "dualpipe " << command.app->get_name() << ": error: " << e.what() << "\n";
      dualpipe::runtime::report_rank_failure(e.what());
      return 1;
    }
  }
  return 0;
}

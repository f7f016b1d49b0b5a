#pragma once
// The `dualpipe` command's subcommands. Each `add_*_command` declares its subcommand and
// options on `app` and returns the action that runs when that subcommand was chosen.
// Actions report user errors by throwing std::exception (main prints one line, exits 1).

#include <CLI/CLI.hpp>
#include <functional>

namespace dualpipe::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_bench_command(CLI::App& app);
Command add_eplb_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_launch_command(CLI::App& app);
Command add_sim_command(CLI::App& app);
Command add_train_command(CLI::App& app);

}  // namespace dualpipe::cli

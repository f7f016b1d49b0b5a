#pragma once
// Runs the built `dualpipe` binary for the command tests: exit code, stdout and stderr.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace dualpipe::testing {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// ctest runs each test in its own process, several at once: the pid keeps their files apart.
inline std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "dualpipe_cli_" + std::to_string(::getpid()) + "_" + name;
}

// `dualpipe <subcommand> <args>` (args as a shell would split them); blocks until it exits.
inline CliRun run_cli(const std::string& subcommand, const std::string& args) {
  const std::string out = temp_path(subcommand + "_stdout"),
                    err = temp_path(subcommand + "_stderr");
  const std::string command =
      std::string(DUALPIPE_CLI_PATH) + " " + subcommand + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

}  // namespace dualpipe::testing

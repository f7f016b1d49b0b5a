#pragma once
// Starting the ranks of a single-node job as local processes (`dualpipe launch`).
// Plain C++ (POSIX, Linux): no LibTorch here, so the launcher stays light.
//
// Re-executing dualpipe itself: a command that must run its work on N ranks (`dualpipe bench
// runtime`, `dualpipe train`) calls launch_local with
//   command = {"/proc/self/exe", <its own subcommand and options>...}
// and every started rank sees DUALPIPE_LAUNCHED=1 (kLaunchedRankEnv) and RANK/WORLD_SIZE/...;
// detect_distributed_env(current_environment()).launcher == "dualpipe launch" tells the command it
// is a rank and should run its work instead of launching again.

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace dualpipe::runtime {

struct LaunchOptions {
  int num_ranks = 1;
  // Program and arguments; the program is looked up in PATH when it has no '/'.
  std::vector<std::string> command;
  // Rendezvous port exported as MASTER_PORT; 0 picks a free port (binding port 0 on loopback).
  int master_port = 0;
  // Communication timeout exported as DUALPIPE_TIMEOUT (seconds); unset when <= 0.
  double timeout_s = 0;
  // After the first rank fails (or the launcher is interrupted) the others get SIGTERM, and
  // SIGKILL when they are still alive after this long.
  std::chrono::milliseconds grace_period{3000};
  // Extra environment variables for every rank (after the launcher's own, so they win).
  std::vector<std::pair<std::string, std::string>> extra_env;
  // Where ranks' prefixed stdout and stderr lines and the launcher's own messages go.
  int stdout_fd = 1;
  int stderr_fd = 2;
};

// Starts options.num_ranks processes running options.command with RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT, OMP_NUM_THREADS=1 and
// DUALPIPE_LAUNCHED=1, and blocks until all have ended. Each line a rank writes to stdout
// (stderr) is written to options.stdout_fd (stderr_fd) as "[rank K] line" in one write, so lines
// never interleave. When a rank exits non-zero or is killed by a signal, the others get SIGTERM,
// then SIGKILL after the grace period; SIGINT/SIGTERM sent to the launcher are forwarded to the
// ranks (the launcher blocks them while it runs; each rank runs in its own process group).
// Returns 0 when every rank exited 0; otherwise writes a line naming the first failed rank and
// its exit status or signal and returns that status (128 + signal number for a signal).
// Throws std::invalid_argument for num_ranks < 1 or an empty command, std::runtime_error when a
// process or pipe cannot be created.
int launch_local(const LaunchOptions& options);

// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it back, close).
int pick_free_port();

}  // namespace dualpipe::runtime

#pragma once
// Starting the ranks of one node of a job as local processes (`dualpipe launch`).
// Plain C++ (POSIX, Linux): no LibTorch here, so the launcher stays light.
//
// Re-executing dualpipe itself: a command that must run its work on N ranks (`dualpipe bench
// runtime`, `dualpipe train`) calls launch_local with
//   command = {"/proc/self/exe", <its own subcommand and options>...}
// and every started rank sees DUALPIPE_LAUNCHED=1 (kLaunchedRankEnv) and RANK/WORLD_SIZE/...;
// detect_distributed_env(current_environment()).launcher == "dualpipe launch" tells the command it
// is a rank and should run its work instead of launching again.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dualpipe::runtime {

struct LaunchOptions {
  // Ranks on this node (torchrun's --nproc-per-node).
  int num_ranks = 1;
  // Nodes of the job and this node's index (torchrun's --nnodes, --node-rank): node k runs the
  // global ranks [k * num_ranks, (k + 1) * num_ranks). Every node must use the same num_ranks.
  int num_nodes = 1;
  int node_rank = 0;
  // Program and arguments; the program is looked up in PATH when it has no '/'.
  std::vector<std::string> command;
  // Host of global rank 0, exported as MASTER_ADDR. Empty: 127.0.0.1 (one node only).
  std::string master_addr;
  // Rendezvous port exported as MASTER_PORT; 0 picks a free port (one node only: on several
  // nodes every launcher must be given the same port).
  int master_port = 0;
  // Communication timeout exported as DUALPIPE_TIMEOUT (seconds); when <= 0 the ranks get the
  // launcher's own DUALPIPE_TIMEOUT, if any.
  double timeout_s = 0;
  // After the first rank fails the others get SIGTERM, and SIGKILL when they are still alive
  // after this long.
  std::chrono::milliseconds grace_period{3000};
  // The same after a SIGINT/SIGTERM forwarded from the launcher (ranks may finish a step and
  // write a checkpoint meanwhile); unset: grace_period.
  std::optional<std::chrono::milliseconds> interrupt_grace_period;
  // Extra environment variables for every rank (after the launcher's own, so they win).
  std::vector<std::pair<std::string, std::string>> extra_env;
  // Where ranks' prefixed stdout and stderr lines and the launcher's own messages go.
  int stdout_fd = 1;
  int stderr_fd = 2;
};

// Starts options.num_ranks processes of this node running options.command with RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (the node rank), MASTER_ADDR,
// MASTER_PORT, OMP_NUM_THREADS=1 and DUALPIPE_LAUNCHED=1, and blocks until all have ended. A
// one-node job on 127.0.0.1 also gets DUALPIPE_STORE_FILE (a file store in a private directory:
// the ranks open no port); on several nodes global rank 0 serves a TCPStore on MASTER_PORT.
// Each line a rank writes to stdout (stderr) is written to options.stdout_fd (stderr_fd) as
// "[rank K] line" (K the global rank) in one write, so lines never interleave.
// When a rank exits non-zero or is killed by a signal, the others get SIGTERM, then SIGKILL
// after the grace period; SIGINT/SIGTERM sent to the launcher are forwarded to the ranks (the
// launcher blocks them while it runs; each rank runs in its own process group). Every rank gets
// SIGKILL when the launcher dies (PR_SET_PDEATHSIG, checked after fork), so a kill -9 of the
// launcher leaves no rank running. A rank stopped by a signal (SIGSTOP) is reported at once,
// and when the job fails the final line blames it as the rank that stopped answering. Otherwise,
// when the first rank here to fail lost a peer, the final line follows the wait-for chain that
// the ranks' reports name (peers_waited_for.h) to the rank that stopped answering: one of this
// node's that failed on its own, or one on another node ("rank 2 (on another node) stopped
// answering its peers"; after a collective of several peers there, "one of ranks 0, 1").
// Returns 0 when every rank exited 0; otherwise writes a line naming the first failed rank and
// its exit status or signal and returns that status (128 + signal number for a signal).
// Throws std::invalid_argument for num_ranks < 1, node_rank outside [0, num_nodes), an empty
// command, or several nodes without master_addr and master_port; std::runtime_error when a
// process or pipe cannot be created, after killing and reaping the ranks already started.
int launch_local(const LaunchOptions& options);

// Called by a rank's top-level error handler (the `dualpipe` command's main, the launch worker)
// with what made it fail: under `dualpipe launch` it records the time and the message's first
// line for the launcher (in DUALPIPE_ERROR_DIR), which blames the rank that failed first, not
// the peers that failed because it was gone, and names the cause in its final line. Elsewhere it
// does nothing. Never throws.
void report_rank_failure(const std::string& what);

// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it back, close).
int pick_free_port();

}  // namespace dualpipe::runtime

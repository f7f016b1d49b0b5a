#pragma once
// How this process was started: which rank it is, how many there are, and where to rendezvous.
// Plain C++ (no LibTorch): the launcher and command-line code read it too.

#include <chrono>
#include <map>
#include <optional>
#include <string>

namespace dualpipe::runtime {

// Environment variables as name -> value; injectable so tests never touch the real environment.
using EnvMap = std::map<std::string, std::string>;

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  // 0 only for a single-process world (nothing to rendezvous with).
  int master_port = 0;
  // "single" (no launcher), "dualpipe launch", "torchrun", "env" (RANK/WORLD_SIZE set by hand or
  // by another torchrun-compatible launcher), "mpirun", "srun".
  std::string launcher = "single";
  // Communication timeout the launcher asked for (`dualpipe launch --timeout`, DUALPIPE_TIMEOUT
  // in seconds); when set it overrides the program's default.
  std::optional<std::chrono::milliseconds> timeout;
  // A c10d::FileStore path to rendezvous through instead of a TCPStore (DUALPIPE_STORE_FILE,
  // set by `dualpipe launch` for local jobs, in a fresh directory only this user can enter):
  // then no rank listens on a port. Empty: TCPStore at master_addr:master_port.
  std::string store_file;
  // torchrun's agent already serves a TCPStore at master_addr:master_port
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank, rank 0 included, connects as a client, under
  // the key prefix store_prefix ("dualpipe/attempt_<TORCHELASTIC_RESTART_COUNT>", so a restarted
  // attempt never reads the keys of the one before).
  bool use_agent_store = false;
  std::string store_prefix;
};

// Environment variable that `dualpipe launch` (launch_local) sets to "1" in every rank it starts.
inline constexpr const char* kLaunchedRankEnv = "DUALPIPE_LAUNCHED";
// Communication timeout in seconds (decimal allowed) that `dualpipe launch --timeout` exports.
inline constexpr const char* kTimeoutEnv = "DUALPIPE_TIMEOUT";
// The rendezvous file store of a local job (see DistributedEnv::store_file).
inline constexpr const char* kStoreFileEnv = "DUALPIPE_STORE_FILE";
// Where `dualpipe launch` collects its ranks' failure reports (runtime::report_rank_failure).
inline constexpr const char* kErrorDirEnv = "DUALPIPE_ERROR_DIR";

// A copy of this process's environment.
EnvMap current_environment();

// Detects the launcher from `env`, in this order:
//   RANK + WORLD_SIZE (dualpipe launch, torchrun, or by hand): LOCAL_RANK / LOCAL_WORLD_SIZE
//     (default: rank / world size, i.e. one node), MASTER_ADDR and MASTER_PORT required when
//     WORLD_SIZE > 1; TORCHELASTIC_USE_AGENT_STORE=True (torchrun) sets use_agent_store;
//   OMPI_COMM_WORLD_RANK + OMPI_COMM_WORLD_SIZE (Open MPI's mpirun): local rank/size from
//     OMPI_COMM_WORLD_LOCAL_RANK/_LOCAL_SIZE; MASTER_ADDR and MASTER_PORT must be exported by the
//     user (mpirun -x MASTER_ADDR -x MASTER_PORT);
//   SLURM_PROCID + SLURM_NTASKS (srun): local rank from SLURM_LOCALID, local size from
//     SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE and SLURM_NODEID; master address from
//     MASTER_ADDR or the first host of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST (plain or a
//     single "prefix[NN-MM,...]" range), master port from MASTER_PORT or
//     10000 + SLURM_JOB_ID % 20000 (every task of the job computes the same);
//   nothing: a single-process world (rank 0 of 1).
// Throws std::invalid_argument naming the variables and their values when they are missing,
// non-numeric or inconsistent (rank >= world size, port out of range, ...).
DistributedEnv detect_distributed_env(const EnvMap& env);

// Whether `address` is a loopback address (127.0.0.0/8, ::1, localhost): a single-node run.
bool is_loopback_address(const std::string& address);

// The first host of a Slurm node list ("node[03-05,9],gpu1" -> "node03"). Throws
// std::invalid_argument for forms it cannot expand (nested or multiple bracket groups).
std::string first_slurm_host(const std::string& nodelist);

}  // namespace dualpipe::runtime

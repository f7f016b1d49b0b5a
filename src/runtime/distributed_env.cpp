#include "dualpipe/runtime/distributed_env.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace dualpipe::runtime {
namespace {

const std::string* find(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

long parse_integer(const std::string& name, const std::string& value) {
  errno = 0;
  char* end = nullptr;
  const long parsed = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || end != value.c_str() + value.size() || errno != 0) {
    throw std::invalid_argument(name + " must be an integer, got " + name + "=\"" + value + "\"");
  }
  return parsed;
}

int require_int(const EnvMap& env, const std::string& name, const std::string& because) {
  const std::string* value = find(env, name);
  if (value == nullptr) throw std::invalid_argument(name + " is not set (" + because + ")");
  return static_cast<int>(parse_integer(name, *value));
}

std::optional<int> optional_int(const EnvMap& env, const std::string& name) {
  const std::string* value = find(env, name);
  if (value == nullptr) return std::nullopt;
  return static_cast<int>(parse_integer(name, *value));
}

std::string pair(const std::string& name, int value) {
  return name + "=" + std::to_string(value);
}

void check_rank(const std::string& rank_name, int rank, const std::string& size_name, int size) {
  if (size < 1) {
    throw std::invalid_argument(size_name + " must be >= 1, got " + pair(size_name, size));
  }
  if (rank < 0 || rank >= size) {
    throw std::invalid_argument(rank_name + " must be in [0, " + size_name + "), got " +
                                pair(rank_name, rank) + ", " + pair(size_name, size));
  }
}

int check_port(int port) {
  if (port < 1 || port > 65535) {
    throw std::invalid_argument("MASTER_PORT must be in [1, 65535], got MASTER_PORT=" +
                                std::to_string(port));
  }
  return port;
}

// Slurm's tasks-per-node list, e.g. "2(x3),1": the count on node `node_id`.
std::optional<int> slurm_tasks_on_node(const std::string& name, const std::string& list,
                                       int node_id) {
  int node = 0;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(pos, comma - pos);
    const size_t paren = item.find("(x");
    const int count = static_cast<int>(parse_integer(name, item.substr(0, paren)));
    int repeat = 1;
    if (paren != std::string::npos) {
      if (item.back() != ')') throw std::invalid_argument("cannot parse " + name + "=" + list);
      repeat =
          static_cast<int>(parse_integer(name, item.substr(paren + 2, item.size() - paren - 3)));
    }
    if (node_id < node + repeat) return count;
    node += repeat;
    pos = comma + 1;
  }
  return std::nullopt;
}

DistributedEnv from_torchrun(const EnvMap& env) {
  DistributedEnv result;
  const std::string* elastic = find(env, "TORCHELASTIC_RUN_ID");
  const std::string* launched = find(env, kLaunchedRankEnv);
  result.launcher = (launched != nullptr && *launched == "1") ? "dualpipe launch"
                    : elastic != nullptr                      ? "torchrun"
                                                              : "env";
  result.rank = require_int(env, "RANK", "RANK is set, so WORLD_SIZE must be too");
  result.world_size = require_int(env, "WORLD_SIZE", "WORLD_SIZE is set, so RANK must be too");
  check_rank("RANK", result.rank, "WORLD_SIZE", result.world_size);
  result.local_rank = optional_int(env, "LOCAL_RANK").value_or(result.rank);
  result.local_world_size = optional_int(env, "LOCAL_WORLD_SIZE").value_or(result.world_size);
  check_rank("LOCAL_RANK", result.local_rank, "LOCAL_WORLD_SIZE", result.local_world_size);
  if (const std::string* addr = find(env, "MASTER_ADDR")) result.master_addr = *addr;
  if (find(env, "MASTER_PORT") != nullptr) {
    result.master_port = check_port(require_int(env, "MASTER_PORT", ""));
  }
  if (result.world_size > 1 &&
      (find(env, "MASTER_ADDR") == nullptr || find(env, "MASTER_PORT") == nullptr)) {
    throw std::invalid_argument(
        "RANK/WORLD_SIZE are set (" + pair("RANK", result.rank) + ", " +
        pair("WORLD_SIZE", result.world_size) +
        ") but MASTER_ADDR and MASTER_PORT are not both set: export the address and port of "
        "rank 0's rendezvous store");
  }
  // NOTE: torchrun's agent serves the store on MASTER_PORT itself; a rank 0 that tried to serve
  // it too would fail to bind (torch.distributed's _create_c10d_store makes every rank a client).
  const std::string* agent_store = find(env, "TORCHELASTIC_USE_AGENT_STORE");
  if (agent_store != nullptr && *agent_store == "True") {
    result.use_agent_store = true;
    const std::string* restart = find(env, "TORCHELASTIC_RESTART_COUNT");
    result.store_prefix = "dualpipe/attempt_" + (restart != nullptr ? *restart : "0");
  }
  return result;
}

DistributedEnv from_mpirun(const EnvMap& env) {
  DistributedEnv result;
  result.launcher = "mpirun";
  result.rank = require_int(env, "OMPI_COMM_WORLD_RANK", "");
  result.world_size =
      require_int(env, "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK is set, so it must be too");
  check_rank("OMPI_COMM_WORLD_RANK", result.rank, "OMPI_COMM_WORLD_SIZE", result.world_size);
  result.local_rank = optional_int(env, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(result.rank);
  result.local_world_size =
      optional_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(result.world_size);
  check_rank("OMPI_COMM_WORLD_LOCAL_RANK", result.local_rank, "OMPI_COMM_WORLD_LOCAL_SIZE",
             result.local_world_size);
  const std::string* addr = find(env, "MASTER_ADDR");
  const std::string* port = find(env, "MASTER_PORT");
  if (addr == nullptr || port == nullptr) {
    if (result.world_size == 1) return result;
    throw std::invalid_argument(
        "started by mpirun (" + pair("OMPI_COMM_WORLD_RANK", result.rank) + ", " +
        pair("OMPI_COMM_WORLD_SIZE", result.world_size) +
        ") but MASTER_ADDR and MASTER_PORT are not both set: pass the rendezvous address, e.g. "
        "mpirun -x MASTER_ADDR=<host of rank 0> -x MASTER_PORT=29500 ...");
  }
  result.master_addr = *addr;
  result.master_port = check_port(static_cast<int>(parse_integer("MASTER_PORT", *port)));
  return result;
}

DistributedEnv from_srun(const EnvMap& env) {
  DistributedEnv result;
  result.launcher = "srun";
  result.rank = require_int(env, "SLURM_PROCID", "");
  result.world_size = require_int(env, "SLURM_NTASKS", "SLURM_PROCID is set, so it must be too");
  check_rank("SLURM_PROCID", result.rank, "SLURM_NTASKS", result.world_size);
  result.local_rank = optional_int(env, "SLURM_LOCALID").value_or(0);
  const int node_id = optional_int(env, "SLURM_NODEID").value_or(0);
  std::optional<int> local_size;
  for (const char* name : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
    if (const std::string* list = find(env, name)) {
      local_size = slurm_tasks_on_node(name, *list, node_id);
      break;
    }
  }
  result.local_world_size = local_size.value_or(result.local_rank + 1);
  check_rank("SLURM_LOCALID", result.local_rank, "local tasks per node", result.local_world_size);
  if (const std::string* addr = find(env, "MASTER_ADDR")) {
    result.master_addr = *addr;
  } else {
    const std::string* nodelist = find(env, "SLURM_STEP_NODELIST");
    std::string name = "SLURM_STEP_NODELIST";
    if (nodelist == nullptr) {
      nodelist = find(env, "SLURM_JOB_NODELIST");
      name = "SLURM_JOB_NODELIST";
    }
    if (nodelist == nullptr) {
      if (result.world_size > 1) {
        throw std::invalid_argument(
            "started by srun but neither MASTER_ADDR nor SLURM_STEP_NODELIST/SLURM_JOB_NODELIST "
            "is set: export MASTER_ADDR=<host of task 0>");
      }
    } else {
      try {
        result.master_addr = first_slurm_host(*nodelist);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string(e.what()) + " (from " + name + "=" + *nodelist +
                                    "); export MASTER_ADDR=<host of task 0> instead");
      }
    }
  }
  if (find(env, "MASTER_PORT") != nullptr) {
    result.master_port = check_port(require_int(env, "MASTER_PORT", ""));
  } else if (find(env, "SLURM_JOB_ID") != nullptr) {
    result.master_port = 10000 + require_int(env, "SLURM_JOB_ID", "") % 20000;
  } else if (result.world_size > 1) {
    throw std::invalid_argument(
        "started by srun but neither MASTER_PORT nor SLURM_JOB_ID is set: export MASTER_PORT");
  }
  return result;
}

std::optional<std::chrono::milliseconds> parse_timeout(const EnvMap& env) {
  const std::string* value = find(env, kTimeoutEnv);
  if (value == nullptr) return std::nullopt;
  char* end = nullptr;
  const double seconds = std::strtod(value->c_str(), &end);
  if (value->empty() || end != value->c_str() + value->size() || !(seconds > 0) ||
      !std::isfinite(seconds)) {
    throw std::invalid_argument(std::string(kTimeoutEnv) +
                                " must be a positive number of seconds, got " + kTimeoutEnv +
                                "=\"" + *value + "\"");
  }
  return std::chrono::milliseconds(static_cast<long long>(std::ceil(seconds * 1000)));
}

}  // namespace

EnvMap current_environment() {
  EnvMap env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const size_t eq = text.find('=');
    if (eq == std::string::npos) continue;
    env.emplace(text.substr(0, eq), text.substr(eq + 1));
  }
  return env;
}

DistributedEnv detect_distributed_env(const EnvMap& env) {
  DistributedEnv result;
  if (find(env, "RANK") != nullptr || find(env, "WORLD_SIZE") != nullptr) {
    result = from_torchrun(env);
  } else if (find(env, "OMPI_COMM_WORLD_RANK") != nullptr ||
             find(env, "OMPI_COMM_WORLD_SIZE") != nullptr) {
    result = from_mpirun(env);
  } else if (find(env, "SLURM_PROCID") != nullptr) {
    result = from_srun(env);
  }
  result.timeout = parse_timeout(env);
  // NOTE: only ranks our launcher started use its file store; another launcher's variables
  // would not point at one.
  if (result.launcher == "dualpipe launch") {
    if (const std::string* store_file = find(env, kStoreFileEnv)) result.store_file = *store_file;
  }
  return result;
}

bool is_loopback_address(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

std::string first_slurm_host(const std::string& nodelist) {
  // NOTE: the first top-level comma ends the first host group; commas inside brackets do not.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    if (nodelist[end] == '[') ++depth;
    if (nodelist[end] == ']') --depth;
    if (nodelist[end] == ',' && depth == 0) break;
  }
  const std::string group = nodelist.substr(0, end);
  const size_t open = group.find('[');
  if (group.empty()) throw std::invalid_argument("empty Slurm node list");
  if (open == std::string::npos) return group;
  const size_t close = group.find(']', open);
  if (close == std::string::npos || group.find('[', open + 1) != std::string::npos ||
      group.find('[', close) != std::string::npos) {
    throw std::invalid_argument("cannot take the first host of Slurm node list \"" + nodelist +
                                "\"");
  }
  const std::string inside = group.substr(open + 1, close - open - 1);
  const size_t stop = inside.find_first_of(",-");
  const std::string first = inside.substr(0, stop);
  if (first.empty() || first.find_first_not_of("0123456789") != std::string::npos) {
    throw std::invalid_argument("cannot take the first host of Slurm node list \"" + nodelist +
                                "\"");
  }
  return group.substr(0, open) + first + group.substr(close + 1);
}

}  // namespace dualpipe::runtime

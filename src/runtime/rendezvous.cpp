#include "dualpipe/runtime/rendezvous.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <vector>

#include "dualpipe/runtime/tcp_store_client.h"

namespace dualpipe::runtime {
namespace {

std::string joined_key(int rank) {
  return "joined/" + std::to_string(rank);
}

std::string seconds(std::chrono::milliseconds timeout) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(timeout.count()) / 1000);
  return text;
}

// The file store of a local job: no socket at all, and only this user can open the directory
// the launcher made for it.
c10::intrusive_ptr<c10d::Store> open_file_store(const DistributedEnv& env,
                                                std::chrono::milliseconds timeout) {
  try {
    auto store = c10::make_intrusive<c10d::FileStore>(env.store_file, env.world_size);
    store->setTimeout(timeout);
    return store;
  } catch (const c10::Error& e) {
    throw std::runtime_error("rank " + std::to_string(env.rank) +
                             " could not open the rendezvous file store " + env.store_file + ": " +
                             e.what_without_backtrace());
  }
}

// torchrun's agent store: every rank is a client (see TcpStoreClient for why not c10d's).
c10::intrusive_ptr<c10d::Store> connect_agent_store(const DistributedEnv& env,
                                                    std::chrono::milliseconds timeout) {
  try {
    auto client = c10::make_intrusive<TcpStoreClient>(env.master_addr, env.master_port, timeout);
    return c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, client);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(env.rank) + " of " +
                             std::to_string(env.world_size) +
                             " could not reach torchrun's agent store at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + ": " + e.what());
  }
}

c10::intrusive_ptr<c10d::Store> connect_store(const DistributedEnv& env,
                                              std::chrono::milliseconds timeout) {
  if (!env.store_file.empty()) return open_file_store(env, timeout);
  if (env.use_agent_store) return connect_agent_store(env, timeout);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(env.master_port);
  store_options.isServer = env.rank == 0;
  store_options.numWorkers = env.world_size;
  // NOTE: we count joined ranks ourselves (below) so a timeout can say who is missing.
  store_options.waitWorkers = false;
  store_options.timeout = timeout;
  use_classic_tcp_store(store_options);
  auto failure = [&](const std::string& cause) {
    return std::runtime_error(
        "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
        (env.rank == 0 ? " could not serve" : " could not reach") + " the rendezvous store at " +
        env.master_addr + ":" + std::to_string(env.master_port) + " (timeout " + seconds(timeout) +
        "): " + cause);
  };
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
  } catch (const c10::Error& e) {
    throw failure(e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw failure(e.what());
  }
}

// Every rank announces itself, then waits for all others; on timeout names the missing ones.
void wait_for_all(c10d::Store& store, const DistributedEnv& env,
                  std::chrono::milliseconds timeout) {
  store.set(joined_key(env.rank), std::vector<uint8_t>{1});
  std::vector<std::string> keys;
  for (int r = 0; r < env.world_size; ++r) keys.push_back(joined_key(r));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (!store.check(keys)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string missing;
      int joined = 0;
      for (int r = 0; r < env.world_size; ++r) {
        if (store.check({keys[r]})) {
          ++joined;
        } else {
          missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        }
      }
      throw std::runtime_error("rendezvous timed out after " + seconds(timeout) + " on rank " +
                               std::to_string(env.rank) + ": " + std::to_string(joined) + " of " +
                               std::to_string(env.world_size) +
                               " ranks joined; missing rank(s): " + missing);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

// The address of this host's interface that reaches `master_addr` (the kernel's route choice,
// read back from a connected UDP socket: nothing is sent). Gloo binds it, so the peers can reach
// this rank even when the host name resolves to a loopback or unrelated address, as it does in
// network namespaces and on many cluster nodes. Empty when it cannot be determined.
std::string local_address_towards(const std::string& master_addr) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(master_addr.c_str(), "9", &hints, &found) != 0) return "";
  std::string result;
  for (addrinfo* address = found; address != nullptr && result.empty();
       address = address->ai_next) {
    const int fd = ::socket(address->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    char text[INET6_ADDRSTRLEN] = {};
    if (::connect(fd, address->ai_addr, address->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0 &&
        ::getnameinfo(reinterpret_cast<sockaddr*>(&local), length, text, sizeof text, nullptr, 0,
                      NI_NUMERICHOST) == 0) {
      result = text;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return result;
}

// Every rank's `host`, by world rank: one allgather of fixed-size byte rows over `world`.
std::vector<std::string> exchange_hosts(const CommunicatorPtr& world, const std::string& host,
                                        std::chrono::milliseconds timeout) {
  const int size = world->getSize();
  if (size == 1) return {host};
  constexpr int64_t kRow = 256;
  at::Tensor mine = at::zeros({kRow}, at::kByte);
  std::copy_n(host.data(), std::min<std::size_t>(host.size(), kRow - 1), mine.data_ptr<uint8_t>());
  std::vector<at::Tensor> input = {mine};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < size; ++r) output[0].push_back(at::empty({kRow}, at::kByte));
  GroupMembers members;
  members.name = "world";
  for (int r = 0; r < size; ++r) members.ranks.push_back(r);
  wait_collective(world->allgather(output, input), *world, members, "allgather of the ranks' hosts",
                  timeout);
  std::vector<std::string> hosts;
  for (const at::Tensor& row : output[0]) {
    hosts.emplace_back(reinterpret_cast<const char*>(row.data_ptr<uint8_t>()));
  }
  return hosts;
}

}  // namespace

GroupMembers world_members(const DistributedContext& context) {
  const int size = context.world ? context.world->getSize() : 1;
  std::vector<int> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(r);
  return group_members("world", std::move(ranks), context.hosts);
}

DistributedContext init_distributed(const DistributedEnv& env, const CommunicatorOptions& options) {
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size) {
    throw std::invalid_argument(
        "init_distributed needs 0 <= rank < world_size, got rank=" + std::to_string(env.rank) +
        ", world_size=" + std::to_string(env.world_size));
  }
  DistributedContext context;
  context.env = env;
  context.options = options;
  if (env.timeout) context.options.timeout = *env.timeout;
  if (is_loopback_address(env.master_addr)) {
    context.options.hostname = "127.0.0.1";
  } else if (is_loopback_address(context.options.hostname)) {
    context.options.hostname = local_address_towards(env.master_addr);
    if (context.options.hostname.empty()) {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      context.options.hostname = host;
    }
  }
  if (env.world_size == 1) {
    context.store = c10::make_intrusive<c10d::HashStore>();
  } else {
    if (env.master_port < 1 || env.master_port > 65535) {
      throw std::invalid_argument("init_distributed needs MASTER_PORT in [1, 65535] for " +
                                  std::to_string(env.world_size) + " ranks, got " +
                                  std::to_string(env.master_port));
    }
    context.store = connect_store(env, context.options.timeout);
    try {
      wait_for_all(*c10::make_intrusive<c10d::PrefixStore>("rendezvous", context.store), env,
                   context.options.timeout);
    } catch (const c10::Error& e) {
      // NOTE: the store's own errors (e.g. "Broken pipe") do not say that its server went away.
      const std::string server = env.use_agent_store ? "torchrun's agent" : "rank 0";
      throw std::runtime_error("rank " + std::to_string(env.rank) + " lost the rendezvous store " +
                               "served by " + server + " at " + env.master_addr + ":" +
                               std::to_string(env.master_port) + " (did " + server +
                               " fail?): " + e.what_without_backtrace());
    }
  }
  context.world = make_communicator(c10::make_intrusive<c10d::PrefixStore>("world", context.store),
                                    env.rank, env.world_size, context.options);
  context.hosts = exchange_hosts(context.world, context.options.hostname, context.options.timeout);
  return context;
}

DistributedContext init_distributed(const CommunicatorOptions& options) {
  return init_distributed(detect_distributed_env(current_environment()), options);
}

}  // namespace dualpipe::runtime

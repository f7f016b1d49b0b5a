#include "dualpipe/runtime/rendezvous.h"

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

c10::intrusive_ptr<c10d::Store> connect_store(const DistributedEnv& env,
                                              std::chrono::milliseconds timeout) {
  if (!env.store_file.empty()) return open_file_store(env, timeout);
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

}  // namespace

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
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    context.options.hostname = host;
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
      // NOTE: the store's own errors (e.g. "Broken pipe") do not say that rank 0 went away.
      throw std::runtime_error("rank " + std::to_string(env.rank) +
                               " lost the rendezvous store served by rank 0 at " + env.master_addr +
                               ":" + std::to_string(env.master_port) +
                               " (did rank 0 fail?): " + e.what_without_backtrace());
    }
  }
  context.world = make_communicator(c10::make_intrusive<c10d::PrefixStore>("world", context.store),
                                    env.rank, env.world_size, context.options);
  return context;
}

DistributedContext init_distributed(const CommunicatorOptions& options) {
  return init_distributed(detect_distributed_env(current_environment()), options);
}

}  // namespace dualpipe::runtime

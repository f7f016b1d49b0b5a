#pragma once
// Test helper: N pipeline ranks as threads of this process, each with its own Gloo communicator
// over one c10d::HashStore and short timeouts.

#include <ATen/Parallel.h>

#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <utility>
#include <vector>

#include "dualpipe/runtime/process_group.h"

namespace dualpipe::runtime::testing {

// Runs body(rank, comm) on `size` threads; returns each rank's exception (nullptr when none).
inline std::vector<std::exception_ptr> run_ranks(
    int size, const std::function<void(int, CommunicatorPtr)>& body,
    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  at::set_num_threads(1);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        CommunicatorOptions options;
        options.timeout = timeout;
        CommunicatorPtr comm = make_communicator(store, rank, size, options);
        // NOTE: Gloo's connect can return on one rank while a peer still handshakes; a rank
        // that then fails fast and drops its communicator would break the peer's connect.
        comm->barrier()->wait();
        // The body holds the only reference, so a rank can drop its communicator (and close its
        // connections) at a point of its choosing.
        body(rank, std::move(comm));
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

inline std::string message_of(const std::exception_ptr& error) {
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "unknown exception";
}

}  // namespace dualpipe::runtime::testing

#pragma once
// Test helper: runs `body(rank, comm)` on `num_ranks` threads joined by Gloo communicators over
// one in-process HashStore, and rethrows the first failure.

#include <ATen/Parallel.h>

#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <vector>

#include "dualpipe/runtime/process_group.h"

namespace dualpipe::moe::testing {

inline void run_ranks(int num_ranks,
                      const std::function<void(int, runtime::CommunicatorPtr)>& body) {
  at::set_num_threads(1);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::exception_ptr failure;
  std::mutex mutex;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < num_ranks; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        runtime::CommunicatorOptions options;
        options.timeout = std::chrono::seconds(30);
        body(rank, runtime::make_communicator(store, rank, num_ranks, options));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failure) failure = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 && b.numel() == 0) return 0.0;
  return (a - b).abs().max().item<double>();
}

}  // namespace dualpipe::moe::testing

#include "dualpipe/runtime/process_grid.h"

namespace dualpipe::moe::testing {

// Runs body(grid) on sizes.pp * sizes.ep * sizes.dp threads with the grid's communicators
// connected, and rethrows the first failure.
inline void run_grid(runtime::GridSizes sizes,
                     const std::function<void(runtime::ProcessGrid&)>& body) {
  at::set_num_threads(1);
  const int world = sizes.pp * sizes.ep * sizes.dp;
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::exception_ptr failure;
  std::mutex mutex;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        runtime::ProcessGrid grid(sizes, rank, world);
        runtime::CommunicatorOptions options;
        options.timeout = std::chrono::seconds(30);
        grid.connect(store, options);
        body(grid);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failure) failure = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace dualpipe::moe::testing

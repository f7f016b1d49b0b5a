#pragma once
// Creating c10d communicators: Gloo for CPU tensors, NCCL when LibTorch has it.

#include <chrono>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "dualpipe/runtime/torch_compat.h"

namespace dualpipe::runtime {

enum class BackendKind { kGloo, kNccl };

struct CommunicatorOptions {
  BackendKind backend = BackendKind::kGloo;
  // Every blocking wait (send, receive, collective, rendezvous) gives up after this long.
  // NOTE: Gloo's own default is 30 minutes; a hung peer must surface much sooner.
  std::chrono::milliseconds timeout{60000};
  // Address the Gloo transport binds to; loopback for single-node runs.
  std::string hostname = "127.0.0.1";
};

// Creates a communicator of `size` ranks over `store`. Blocking: every one of the `size` ranks
// must call it with the same store (prefix) and options; it returns once all have connected or
// throws std::runtime_error naming rank and size after `options.timeout`.
// Throws std::invalid_argument for rank out of [0, size) or NCCL without a CUDA build.
CommunicatorPtr make_communicator(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                  const CommunicatorOptions& options = {});

}  // namespace dualpipe::runtime

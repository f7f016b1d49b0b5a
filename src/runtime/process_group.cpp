#include "dualpipe/runtime/process_group.h"

#include <csignal>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dualpipe::runtime {

CommunicatorPtr make_communicator(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                  const CommunicatorOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    throw std::invalid_argument("make_communicator needs 0 <= rank < size, got rank=" +
                                std::to_string(rank) + ", size=" + std::to_string(size));
  }
  if (options.backend == BackendKind::kNccl) {
#if defined(USE_C10D_NCCL)
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = options.timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, nccl_options);
#else
    throw std::invalid_argument(
        "NCCL was requested but this LibTorch was built without CUDA/NCCL; use the Gloo backend");
#endif
  }
  // NOTE: Gloo writes to TCP sockets without MSG_NOSIGNAL, so a peer that died turns the next
  // write into SIGPIPE, which kills a C++ process (Python ignores SIGPIPE, so PyTorch users never
  // see it). Ignore it unless the program installed its own handler: the write then fails with
  // EPIPE and surfaces as an error naming the peer.
  struct sigaction current = {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
  auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
  gloo_options->devices.push_back(
      c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname));
  // NOTE: one Gloo worker thread per communicator: ranks run with one intra-op thread each.
  gloo_options->threads = 1;
  try {
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, gloo_options);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) + " of " + std::to_string(size) +
                             " could not connect its Gloo communicator: " + e.what());
  }
}

}  // namespace dualpipe::runtime

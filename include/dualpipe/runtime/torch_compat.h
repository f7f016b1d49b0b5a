#pragma once
// The one place where LibTorch version differences live (1.13 from Debian 12, 2.x with CUDA).
// Everything else in dualpipe includes this header instead of spelling version-specific names.

#include <torch/version.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif

namespace dualpipe::runtime {

// NOTE: In LibTorch 1.13 ProcessGroupGloo/NCCL derive from c10d::ProcessGroup; in 2.x they
// derive from c10d::Backend (ProcessGroup became a dispatching wrapper). Both expose the same
// send/recv/allreduce/alltoall_base/barrier virtuals, so dualpipe talks to the backend object.
#if TORCH_VERSION_MAJOR >= 2
using Communicator = c10d::Backend;
#else
using Communicator = c10d::ProcessGroup;
#endif

using CommunicatorPtr = c10::intrusive_ptr<Communicator>;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

// The communicator behind a torch.distributed process group (as Python's
// `dist.distributed_c10d._get_default_group()` holds it) for tensors on `device`: the group
// itself in 1.13, its backend for that device type in 2.x. Throws c10::Error when the group has
// no backend for that device type (2.x).
inline CommunicatorPtr communicator_of(const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                                       c10::DeviceType device) {
#if TORCH_VERSION_MAJOR >= 2
  return group->getBackend(device);
#else
  (void)device;
  return group;
#endif
}

// NOTE: LibTorch 2.4 turned TCPStoreOptions::useLibUV on by default, but builds without libuv
// (Debian's 2.6) then refuse to start a store ("use_libuv was requested but PyTorch was build
// without libuv support"). The classic TCPStore backend exists in every version, so dualpipe
// always asks for it. A template, so that versions without the field (1.13) compile too and this
// header need not include TCPStore.hpp.
template <typename StoreOptions>
auto use_classic_tcp_store(StoreOptions& options, int)
    -> decltype(options.useLibUV = false, void()) {
  options.useLibUV = false;
}
template <typename StoreOptions>
void use_classic_tcp_store(StoreOptions&, long) {}
template <typename StoreOptions>
void use_classic_tcp_store(StoreOptions& options) {
  use_classic_tcp_store(options, 0);
}

// Whether this LibTorch build has CUDA and NCCL (the GPU machines' 2.x builds).
#if defined(USE_C10D_NCCL)
inline constexpr bool kHasNccl = true;
#else
inline constexpr bool kHasNccl = false;
#endif

}  // namespace dualpipe::runtime

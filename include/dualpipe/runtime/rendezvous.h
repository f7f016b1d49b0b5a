#pragma once
// Joining the job: the rendezvous store (c10d TCPStore) and the world communicator.

#include <chrono>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/distributed_env.h"
#include "dualpipe/runtime/process_group.h"
#include "dualpipe/runtime/torch_compat.h"

namespace dualpipe::runtime {

struct DistributedContext {
  DistributedEnv env;
  // The store every later group is created over (through a c10d::PrefixStore of its own).
  c10::intrusive_ptr<c10d::Store> store;
  // All ranks, in rank order.
  CommunicatorPtr world;
  // What the communicators were created with (timeout already resolved from env.timeout).
  CommunicatorOptions options;
  // The address each rank's Gloo transport bound (options.hostname), by world rank: exchanged
  // once when joining, so that an error can say which host a lost peer is on.
  std::vector<std::string> hosts;
};

// The members of context.world ("world", every rank, their hosts), for wait_collective.
GroupMembers world_members(const DistributedContext& context);

// Joins the job described by `env` (see detect_distributed_env). Blocking: every rank of the
// world must call it. Ranks of a local `dualpipe launch` job meet in a c10d::FileStore
// (env.store_file, in a directory only this user can enter) and open no listening socket but
// Gloo's on 127.0.0.1. Otherwise rank 0 serves a TCPStore on env.master_port, on every interface
// (c10d's TCPStore cannot bind one address and has no authentication: see the README's Safety
// section), and all others connect to env.master_addr:env.master_port. A world of one uses an
// in-process store and opens no socket.
// When env.master_addr is a loopback address the Gloo transport binds to 127.0.0.1, otherwise
// to this host's name (options.hostname is used when it is not the loopback default).
// env.timeout, when set, replaces options.timeout. Every wait gives up after that timeout:
// throws std::runtime_error naming this rank, how many ranks joined and which are missing.
// Once the world communicator is up, the ranks allgather their hosts (context.hosts).
DistributedContext init_distributed(const DistributedEnv& env,
                                    const CommunicatorOptions& options = {});

// Same, reading the process environment.
DistributedContext init_distributed(const CommunicatorOptions& options = {});

}  // namespace dualpipe::runtime

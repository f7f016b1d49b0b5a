#pragma once
// Waiting for a collective (allreduce, allgather, all-to-all) so that a failure says who this
// rank waited for: the group, its other members and the hosts they are on. c10d's own message
// for a collective that a peer never joined is only "Operation timed out!".

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "dualpipe/runtime/peers_waited_for.h"
#include "dualpipe/runtime/torch_compat.h"

namespace dualpipe::runtime {

// Who is in a communicator, for error messages. Default: unknown (messages then name group
// ranks, which are world ranks only for the world itself).
struct GroupMembers {
  std::string name;                // e.g. "world", "grid/dp/ep0.pp1"; "" when unnamed
  std::vector<int> ranks;          // the world rank of each group rank; empty when unknown
  std::vector<std::string> hosts;  // the host of each group rank; empty when unknown
};

// The members of a group given as world ranks `ranks` (by group rank), their hosts looked up in
// `hosts_by_world_rank` (empty, or one per world rank).
GroupMembers group_members(std::string name, std::vector<int> ranks,
                           const std::vector<std::string>& hosts_by_world_rank);

// Communicator rank `peer` of a group as an error names it to this rank (communicator rank
// `self`): by its world rank (`fallback` when the members are unknown), with its host when that
// is known and not this rank's.
PeerWaitedFor peer_in_group(const GroupMembers& members, int peer, int self, int fallback);

// The failure message of a collective: "rank 3 waiting for the allreduce of the step's losses
// with ranks 0, 1, 2, 3 (group world, timeout 10000 ms) failed: Operation timed out!; peers it
// waited for: rank 0 (host 10.77.0.1), rank 1 (host 10.77.0.1), rank 2". `what` names the
// collective ("allreduce of the step's losses"); `error` is what c10d threw. The peers are the
// group's other members, those on another host than this rank first; hosts are named only when
// the group spans several. No timeout: the communicator's own.
std::string collective_failure_message(const GroupMembers& members, int group_rank, int group_size,
                                       const std::string& what,
                                       std::optional<std::chrono::milliseconds> timeout,
                                       const std::string& error);

// Waits for `work`, a collective that `comm` (whose members are `members`) started, for at most
// `timeout` (none: the communicator's own timeout). Blocking; called by the thread that started
// the collective. Throws std::runtime_error with collective_failure_message when the collective
// fails or does not complete in time.
void wait_collective(const WorkPtr& work, const Communicator& comm, const GroupMembers& members,
                     const std::string& what,
                     std::optional<std::chrono::milliseconds> timeout = std::nullopt);

}  // namespace dualpipe::runtime

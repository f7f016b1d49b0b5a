#include "dualpipe/runtime/collective_wait.h"

#include <c10/util/Exception.h>

#include <stdexcept>

namespace dualpipe::runtime {
namespace {

std::string first_line(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

}  // namespace

GroupMembers group_members(std::string name, std::vector<int> ranks,
                           const std::vector<std::string>& hosts_by_world_rank) {
  GroupMembers members;
  members.name = std::move(name);
  if (!hosts_by_world_rank.empty()) {
    for (int r : ranks) {
      members.hosts.push_back(r >= 0 && r < static_cast<int>(hosts_by_world_rank.size())
                                  ? hosts_by_world_rank[static_cast<std::size_t>(r)]
                                  : "");
    }
  }
  members.ranks = std::move(ranks);
  return members;
}

PeerWaitedFor peer_in_group(const GroupMembers& members, int peer, int self, int fallback) {
  const auto p = static_cast<std::size_t>(peer);
  const auto s = static_cast<std::size_t>(self);
  PeerWaitedFor who{peer >= 0 && p < members.ranks.size() ? members.ranks[p] : fallback, ""};
  if (peer >= 0 && self >= 0 && p < members.hosts.size() && s < members.hosts.size() &&
      members.hosts[p] != members.hosts[s]) {
    who.host = members.hosts[p];
  }
  return who;
}

std::string collective_failure_message(const GroupMembers& members, int group_rank, int group_size,
                                       const std::string& what,
                                       std::optional<std::chrono::milliseconds> timeout,
                                       const std::string& error) {
  const bool known = static_cast<int>(members.ranks.size()) == group_size;
  const bool have_hosts = known && static_cast<int>(members.hosts.size()) == group_size;
  auto rank_of = [&](int g) { return known ? members.ranks[static_cast<std::size_t>(g)] : g; };
  auto host_of = [&](int g) {
    return have_hosts ? members.hosts[static_cast<std::size_t>(g)] : std::string();
  };
  bool several_hosts = false;
  for (int g = 0; g < group_size; ++g) several_hosts |= host_of(g) != host_of(group_rank);
  std::string ranks;
  for (int g = 0; g < group_size; ++g) ranks += (g > 0 ? ", " : "") + std::to_string(rank_of(g));
  // Peers on other hosts first: when the link between hosts fails, they are the ones lost.
  std::vector<PeerWaitedFor> peers;
  for (const bool other_host : {true, false}) {
    for (int g = 0; g < group_size; ++g) {
      if (g == group_rank || (host_of(g) != host_of(group_rank)) != other_host) continue;
      peers.push_back({rank_of(g), several_hosts ? host_of(g) : ""});
    }
  }
  std::string group = members.name.empty() ? "" : "group " + members.name;
  if (!known) group += std::string(group.empty() ? "" : ", ") + "group ranks";
  if (timeout) {
    group += std::string(group.empty() ? "" : ", ") + "timeout " +
             std::to_string(timeout->count()) + " ms";
  }
  const std::string head = "rank " + std::to_string(rank_of(group_rank)) + " waiting for the " +
                           what + " with " + (group_size == 1 ? "rank " : "ranks ") + ranks +
                           (group.empty() ? "" : " (" + group + ")") + " failed: ";
  return with_peers_waited_for(head + error, peers);
}

void wait_collective(const WorkPtr& work, const Communicator& comm, const GroupMembers& members,
                     const std::string& what, std::optional<std::chrono::milliseconds> timeout) {
  std::string error;
  try {
    const bool done = timeout ? work->wait(*timeout) : work->wait();
    if (done) return;
    error = "the wait returned without completing";
  } catch (const c10::Error& e) {
    error = first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    error = first_line(e.what());
  }
  throw std::runtime_error(
      collective_failure_message(members, comm.getRank(), comm.getSize(), what, timeout, error));
}

}  // namespace dualpipe::runtime

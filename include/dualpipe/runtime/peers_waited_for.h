#pragma once
// How a rank's failure message names the peers it was waiting for when the wait failed: written
// by the rank (pipeline sends and receives, collectives), read back by `dualpipe launch` to
// follow the wait-for chain from the first rank that failed to the one that stopped answering.
// Plain C++ (no LibTorch): the launcher reads it too.
//
//   "...: Operation timed out!; peers it waited for: rank 0 (host 10.77.0.1), rank 1"
//
// NOTE: a failure report keeps only its message's first line, so writers put the clause there.

#include <string>
#include <vector>

namespace dualpipe::runtime {

// A peer a rank waited for: its world rank and, when known, its host ("" when not).
struct PeerWaitedFor {
  int rank = 0;
  std::string host;
};

// "; peers it waited for: rank 0 (host 10.77.0.1), rank 1", in the order given; "" for none.
// Writers append it to the first line of their failure message (see with_peers_waited_for).
std::string peers_waited_for_clause(const std::vector<PeerWaitedFor>& peers);

// `message` with the clause inserted at the end of its first line (before the first '\n'), so it
// survives report_rank_failure; `message` itself when `peers` is empty.
std::string with_peers_waited_for(const std::string& message,
                                  const std::vector<PeerWaitedFor>& peers);

// The world ranks the last clause in the first line of `message` names, in order; empty when it
// has none (a message of some other code, or a rank that failed on its own).
std::vector<int> peers_waited_for(const std::string& message);

}  // namespace dualpipe::runtime

#include "dualpipe/runtime/peers_waited_for.h"

#include <cctype>
#include <cstdlib>

namespace dualpipe::runtime {
namespace {

constexpr const char* kMark = "; peers it waited for: ";
constexpr const char* kRank = "rank ";
constexpr const char* kHost = " (host ";

}  // namespace

std::string peers_waited_for_clause(const std::vector<PeerWaitedFor>& peers) {
  if (peers.empty()) return "";
  std::string clause = kMark;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    if (i > 0) clause += ", ";
    clause += kRank + std::to_string(peers[i].rank);
    if (!peers[i].host.empty()) clause += kHost + peers[i].host + ")";
  }
  return clause;
}

std::string with_peers_waited_for(const std::string& message,
                                  const std::vector<PeerWaitedFor>& peers) {
  if (peers.empty()) return message;
  const std::size_t end = message.find('\n');
  if (end == std::string::npos) return message + peers_waited_for_clause(peers);
  return message.substr(0, end) + peers_waited_for_clause(peers) + message.substr(end);
}

std::vector<int> peers_waited_for(const std::string& message) {
  const std::string line = message.substr(0, message.find('\n'));
  const std::size_t mark = line.rfind(kMark);
  if (mark == std::string::npos) return {};
  std::vector<int> ranks;
  std::size_t at = mark + std::char_traits<char>::length(kMark);
  while (line.compare(at, std::char_traits<char>::length(kRank), kRank) == 0) {
    at += std::char_traits<char>::length(kRank);
    std::size_t digits = at;
    while (digits < line.size() && std::isdigit(static_cast<unsigned char>(line[digits]))) ++digits;
    if (digits == at) break;
    ranks.push_back(std::atoi(line.substr(at, digits - at).c_str()));
    at = digits;
    if (line.compare(at, std::char_traits<char>::length(kHost), kHost) == 0) {
      const std::size_t close = line.find(')', at);
      if (close == std::string::npos) break;
      at = close + 1;
    }
    if (line.compare(at, 2, ", ") != 0) break;
    at += 2;
  }
  return ranks;
}

}  // namespace dualpipe::runtime

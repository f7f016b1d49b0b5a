#include "dualpipe/runtime/trace.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace dualpipe::runtime {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

int lane_of(const std::string& category) {
  if (category == "compute") return 0;
  if (category == "wait") return 1;
  if (category == "send") return 2;
  return 3;
}

}  // namespace

void Trace::add(std::string name, const char* category, std::int64_t start_us) {
  if (!enabled_) return;
  events_.push_back({std::move(name), category, start_us, now_us() - start_us});
}

void Trace::add_event(TraceEvent event) {
  if (enabled_) events_.push_back(std::move(event));
}

std::string to_chrome_trace_json(const std::vector<std::vector<TraceEvent>>& events_per_rank) {
  std::int64_t origin = std::numeric_limits<std::int64_t>::max();
  for (const auto& events : events_per_rank) {
    for (const TraceEvent& e : events) origin = std::min(origin, e.start_us);
  }
  if (origin == std::numeric_limits<std::int64_t>::max()) origin = 0;
  std::ostringstream out;
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[";
  bool first = true;
  const char* lanes[] = {"compute", "wait", "send", "recv"};
  for (std::size_t rank = 0; rank < events_per_rank.size(); ++rank) {
    out << (first ? "" : ",") << "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":" << rank
        << ",\"args\":{\"name\":\"rank " << rank << "\"}}";
    first = false;
    for (int lane = 0; lane < 4; ++lane) {
      out << ",{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":" << rank << ",\"tid\":" << lane
          << ",\"args\":{\"name\":\"" << lanes[lane] << "\"}}";
    }
    for (const TraceEvent& e : events_per_rank[rank]) {
      out << ",{\"ph\":\"X\",\"name\":\"" << escape(e.name) << "\",\"cat\":\"" << escape(e.category)
          << "\",\"pid\":" << rank << ",\"tid\":" << lane_of(e.category)
          << ",\"ts\":" << (e.start_us - origin) << ",\"dur\":" << e.duration_us << "}";
    }
  }
  out << "]}\n";
  return out.str();
}

void write_chrome_trace(const std::string& path,
                        const std::vector<std::vector<TraceEvent>>& events_per_rank) {
  std::ofstream file(path);
  if (!file) throw std::runtime_error("cannot write Chrome trace to '" + path + "'");
  file << to_chrome_trace_json(events_per_rank);
  if (!file) throw std::runtime_error("failed writing Chrome trace to '" + path + "'");
}

}  // namespace dualpipe::runtime

#pragma once
// Chrome trace of what one rank really ran (compute ops, sends, receives, waits), with wall-clock
// times, and a merge of all ranks into one JSON file that opens in Perfetto (pid = rank).

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe::runtime {

struct TraceEvent {
  std::string name;           // "F0.3", "B1.2z", "send A d0 s1 mb3 -> 2", "wait ..."
  std::string category;       // "compute", "send", "recv", "wait"
  std::int64_t start_us = 0;  // microseconds on the steady clock (shared by all local ranks)
  std::int64_t duration_us = 0;
};

class Trace {
 public:
  bool enabled() const { return enabled_; }
  void set_enabled(bool enabled) { enabled_ = enabled; }
  static std::int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  // Records [start_us, now) when enabled.
  void add(std::string name, const char* category, std::int64_t start_us);
  // Records an event measured elsewhere (e.g. on another thread) when enabled.
  void add_event(TraceEvent event);
  const std::vector<TraceEvent>& events() const { return events_; }
  void clear() { events_.clear(); }

 private:
  bool enabled_ = false;
  std::vector<TraceEvent> events_;
};

// Chrome trace JSON ("traceEvents" with complete events, pid = rank, tid = category lane) of
// the ranks' events; times are shifted so the earliest event starts at 0.
std::string to_chrome_trace_json(const std::vector<std::vector<TraceEvent>>& events_per_rank);
// Writes to_chrome_trace_json() to `path`. Throws std::runtime_error when it cannot.
void write_chrome_trace(const std::string& path,
                        const std::vector<std::vector<TraceEvent>>& events_per_rank);

}  // namespace dualpipe::runtime

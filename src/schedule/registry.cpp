#include "dualpipe/schedule/registry.h"

#include <stdexcept>

#include "dualpipe/schedule/dualpipe.h"
#include "dualpipe/schedule/dualpipev.h"
#include "dualpipe/schedule/gpipe.h"
#include "dualpipe/schedule/one_f_one_b.h"
#include "dualpipe/schedule/zero_bubble.h"

namespace dualpipe::schedule {
namespace {

struct Entry {
  const char* name;
  Schedule (*build)(int num_ranks, int num_microbatches);
};

// A constant table, not a mutable registry: new schedules are added here.
constexpr Entry kSchedules[] = {
    {"dualpipe", build_dualpipe}, {"dualpipev", build_dualpipev}, {"1f1b", build_1f1b},
    {"zb1p", build_zb1p},         {"gpipe", build_gpipe},
};

}  // namespace

std::vector<std::string> schedule_names() {
  std::vector<std::string> names;
  for (const Entry& entry : kSchedules) names.emplace_back(entry.name);
  return names;
}

Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches) {
  std::string allowed;
  for (const Entry& entry : kSchedules) {
    if (name == entry.name) return entry.build(num_ranks, num_microbatches);
    allowed += allowed.empty() ? entry.name : std::string(", ") + entry.name;
  }
  throw std::invalid_argument("unknown schedule \"" + name + "\", allowed: " + allowed);
}

}  // namespace dualpipe::schedule

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

int Schedule::microbatches_per_direction() const {
  return num_directions() > 0 ? num_microbatches / num_directions() : 0;
}

bool operator==(const Schedule& a, const Schedule& b) {
  return a.name == b.name && a.num_microbatches == b.num_microbatches &&
         a.placement == b.placement && a.programs == b.programs;
}

}  // namespace dualpipe::schedule

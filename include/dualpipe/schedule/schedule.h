#pragma once
// A whole pipeline schedule: sizes, stage placement and one program per rank.

#include <string>
#include <vector>

#include "dualpipe/schedule/op.h"
#include "dualpipe/schedule/placement.h"

namespace dualpipe::schedule {

struct Schedule {
  std::string name;          // "dualpipe", "dualpipev", "1f1b", "zb1p", "gpipe", ...
  int num_microbatches = 0;  // as the user gave it: the total over all directions
  Placement placement;
  std::vector<Program> programs;  // programs[rank]

  int num_ranks() const { return placement.num_ranks(); }
  int num_directions() const { return placement.num_directions(); }
  int num_stages() const { return placement.num_stages(); }
  // Micro-batches that enter each direction (num_microbatches / num_directions).
  int microbatches_per_direction() const;

  friend bool operator==(const Schedule& a, const Schedule& b);
};

}  // namespace dualpipe::schedule

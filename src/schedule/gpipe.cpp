#include "dualpipe/schedule/gpipe.h"

#include "builder_support.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {

Schedule build_gpipe(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("GPipe", num_ranks, num_microbatches);
  Schedule schedule{"gpipe", num_microbatches, Placement::round_robin(num_ranks, num_ranks), {}};
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    Program& program = schedule.programs[rank];
    for (int m = 0; m < num_microbatches; ++m) program.push_back(Op::forward(0, rank, m));
    for (int m = 0; m < num_microbatches; ++m) program.push_back(Op::backward(0, rank, m));
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

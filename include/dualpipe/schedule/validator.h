#pragma once
// Static checks of a Schedule: every rule the executor relies on, checked before anything runs,
// so a wrong builder fails with "rank 3, op 17 (B(d=0,s=3,m=2)): ..." instead of a hang on 64
// GPUs. The checks follow the execution semantics of the schedule IR (see op.h):
//   - each op names a stage instance that exists and lives on its rank; peers and micro-batches
//     are in range;
//   - each stage instance runs each of its micro-batches forward once and backward once, and
//     each deferred backward (Bz) gets exactly one W, in FIFO order per rank;
//   - a backward follows its forward, a W its Bz; each compute op's input is computed earlier
//     on the same rank or received earlier; a send follows the compute that produces its item;
//   - every send has its receive and vice versa, in the same order on both ends of each ordered
//     rank pair (FIFO channel matching);
//   - with "a receive blocks until its send has been posted, sends never block", no deadlock.
// All checks run in time linear in the number of ops.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

struct ValidationError {
  int rank = -1;      // -1 when the problem is not tied to one rank
  int op_index = -1;  // index in programs[rank]; -1 when the problem is a missing op
  std::string op;     // describe() of the offending op (or of the missing one)
  std::string reason;
};

// "rank 3, op 17 B(d=0,s=3,m=2): <reason>" (or "rank 3, missing B(...)": <reason>).
std::string to_string(const ValidationError& error);

// Thrown by validate(). what() names the first problem and how many more there are.
class ScheduleError : public std::invalid_argument {
 public:
  ScheduleError(const std::string& schedule_name, std::vector<ValidationError> problems,
                std::size_t total_problems);
  // The recorded problems (at most kDefaultMaxProblems), first one first.
  const std::vector<ValidationError>& problems() const { return problems_; }
  // All problems found, including those not recorded.
  std::size_t total_problems() const { return total_problems_; }

 private:
  std::vector<ValidationError> problems_;
  std::size_t total_problems_ = 0;
};

inline constexpr std::size_t kDefaultMaxProblems = 1000;

// Every problem of `schedule` (up to `max_problems` of them), grouped by check in the order
// listed at the top of this file, and within a check by rank and op index. Empty means valid.
// Pure function of its argument; safe to call from several threads.
std::vector<ValidationError> find_problems(const Schedule& schedule,
                                           std::size_t max_problems = kDefaultMaxProblems);

// Throws ScheduleError naming the first problem when find_problems() finds any.
void validate(const Schedule& schedule);

}  // namespace dualpipe::schedule

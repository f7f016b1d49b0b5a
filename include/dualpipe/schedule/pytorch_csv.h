#pragma once
// torch.distributed.pipelining's CSV schedule files (PipelineScheduleMulti._dump_csv/_load_csv,
// _PipelineScheduleRuntime's "compute_only" and "compute_comms" formats, as torchtitan's
// `pipeline_parallel_schedule_csv` reads them), so a schedule moves both ways between PyTorch
// and dualpipe.
//
// One row per rank, one action per field, in execution order; an empty field is a bubble (PyTorch
// writes None as ""). An action is _Action's repr: <stage><type>[<microbatch>] with a GLOBAL stage
// index of the one pipeline direction and the stage's rank given by the row it appears on:
//   <s>F<m>  forward              <s>B<m>  full backward          <s>I<m>  input gradient only (Bz)
//   <s>W<m>  deferred weight gradient of an earlier <s>I<m>
//   (<s>F<m>;<s'>B<m'>)OVERLAP_F_B   our FB: forward of the first, backward of the second
//                                    ((<s>F<m>;<s'>I<m'>)OVERLAP_F_B when that backward defers W)
//   <s>SEND_F<m> <s>RECV_F<m> <s>SEND_B<m> <s>RECV_B<m>   "compute_comms" files: the stage is the
//       one on THIS rank (the producer for a send, the consumer for a receive), as in
//       PyTorch's _add_send_recv
//   <s>UNSHARD <s>RESHARD <s>REDUCE_GRAD   FSDP and gradient-reduction steps: read and ignored
//       (they do not order the pipeline; dualpipe reduces gradients after the step).
// A stage lives on the rank whose row names it; a rank's slots are its stages in ascending order
// (round-robin, interleaved and V placements all number slots that way).
//
// Every reader error is std::invalid_argument naming the rank (row), the field and the action.
// All functions are pure.

#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

enum class CsvActions {
  kComputeOnly,     // compute actions only: the reader derives communication (PyTorch's default)
  kComputeAndComm,  // also SEND_F/RECV_F/SEND_B/RECV_B in program order ("compute_comms")
};

// The schedule as PyTorch's CSV: rows joined by "\r\n" like Python's csv.writer. Throws
// std::invalid_argument for a schedule with more than one direction (DualPipe: PyTorch's format
// has a single pipeline; write DualPipeV, its one-direction form, instead).
std::string to_pytorch_csv(const Schedule& schedule, CsvActions actions = CsvActions::kComputeOnly);

// The registered schedules whose built programs have the same compute ops per rank as
// `schedule` at its sizes (communication ignored), in schedule_names() order. Sizes a schedule
// does not accept rule it out. Pure; builds each candidate once.
std::vector<std::string> schedules_with_same_compute(const Schedule& schedule);

// Reads a PyTorch CSV. A file without SEND/RECV actions gets its communication from
// insert_communication(); a file with them keeps them where they are (the validator then checks
// them). `name` is the schedule family the file is (a PyTorch file names none): one of
// schedule_names(); empty means the unique registered schedule whose compute order the file
// has (schedules_with_same_compute), and an error listing the schedules with the same placement
// when there is none. num_microbatches is the largest micro-batch + 1; ends with
// check_loaded_schedule(). Call validate() before running it.
Schedule parse_pytorch_csv(const std::string& text, const std::string& name = "");

// Whether `text` looks like a PyTorch CSV rather than dualpipe's JSON or text forms: its first
// non-blank line starts with an action ("<digits>" or "(") or a ',' (a leading bubble).
bool looks_like_pytorch_csv(const std::string& text);

}  // namespace dualpipe::schedule

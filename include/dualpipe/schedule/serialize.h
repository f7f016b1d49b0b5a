#pragma once
// Text and JSON forms of a Schedule, compatible with the reference-order oracle files
// (tests/data/reference-order/README.md). On rank r an op is spelled with its LOCAL SLOT on r:
//   F<slot>.<m>   B<slot>.<m>   B<slot>.<m>z (input gradient only)   W<slot>.<m>
//   FB<slot>.<m>/<slot'>.<m'>   (forward of the first, full backward of the second)
//   sF<slot>.<m>@<peer>  rF<slot>.<m>@<peer>  sB<slot>.<m>@<peer>  rB<slot>.<m>@<peer>
// where a communication token's slot is that of the stage instance on THIS rank that the item
// belongs to: the producer for a send, the consumer for a receive (a received activation of
// (d, s) is consumed by (d, s+1), a received gradient of (d, s) by (d, s-1)). "|" (the
// reference's wait-for-everything) is accepted and ignored.
//
// Every reader throws std::invalid_argument on malformed input, naming the rank, the token
// position and the token where there is one. All functions are pure.

#include <nlohmann/json.hpp>
#include <string>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// One op as a token on `rank`. Throws std::invalid_argument when the op's stage instance (or,
// for a receive, the consuming stage instance) is not on `rank`.
std::string to_token(const Op& op, int rank, const Placement& placement);
// Inverse of to_token(). `position` only goes into error messages.
Op parse_token(const std::string& token, int rank, const Placement& placement, int position = -1);

// {"schedule": name, "pp": num_ranks, "chunks": num_microbatches, "ranks": [[tokens]...],
//  "placement": {"num_ranks", "num_directions", "num_stages", "locations": [[rank, slot]...]}}
// with locations ordered direction-major. A superset of the oracle files.
nlohmann::json to_json(const Schedule& schedule);
// Exactly the oracle shape {"schedule", "pp", "chunks", "ranks"} (no "|").
nlohmann::json to_oracle_json(const Schedule& schedule);
// Reads to_json()'s shape or a bare oracle file; without "placement" it is the registry's
// placement for the named schedule (schedule_placement). Ends with check_loaded_schedule().
Schedule schedule_from_json(const nlohmann::json& json);
// What every reader checks after parsing: the name is one of schedule_names(), the sizes are
// within check_size_limits(), and num_microbatches ("chunks") is what the ops imply
// (num_directions * (largest micro-batch + 1)). Throws std::invalid_argument naming the values.
// The validator then checks the programs themselves.
void check_loaded_schedule(const Schedule& schedule);
// Parses JSON text, then schedule_from_json(); bad JSON becomes std::invalid_argument.
Schedule parse_schedule_json(const std::string& text);

// Plain text, one line per item:
//   schedule <name>
//   num_ranks <R>
//   num_microbatches <M>
//   placement <num_directions> <num_stages> <rank>:<slot> ...   (direction-major)
//   rank 0: <tokens...>
//   ...
// Blank lines and lines starting with '#' are ignored when reading.
std::string to_text(const Schedule& schedule);
Schedule parse_schedule_text(const std::string& text);

}  // namespace dualpipe::schedule

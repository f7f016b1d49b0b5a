#include "dualpipe/schedule/pytorch_csv.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"
#include "dualpipe/schedule/item.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/serialize.h"

namespace dualpipe::schedule {
namespace {

// ---- writing ----

std::string action(int stage, const char* type, int microbatch) {
  return std::to_string(stage) + type + std::to_string(microbatch);
}

std::string backward_action(int stage, int microbatch, bool deferred) {
  return action(stage, deferred ? "I" : "B", microbatch);
}

std::string to_action(const Op& op) {
  switch (op.kind) {
    case OpKind::kForward: return action(op.stage, "F", op.microbatch);
    case OpKind::kBackward: return backward_action(op.stage, op.microbatch, op.defer_weight_grad);
    case OpKind::kWeight: return action(op.stage, "W", op.microbatch);
    case OpKind::kForwardBackward:
      return "(" + action(op.stage, "F", op.microbatch) + ";" +
             backward_action(op.backward_stage, op.backward_microbatch, op.defer_weight_grad) +
             ")OVERLAP_F_B";
    // PyTorch names the stage on this rank: the producer for a send, the consumer for a receive.
    case OpKind::kSendActivation: return action(op.stage, "SEND_F", op.microbatch);
    case OpKind::kSendGrad: return action(op.stage, "SEND_B", op.microbatch);
    case OpKind::kRecvActivation:
    case OpKind::kRecvGrad:
      return action(consumer_stage(item_of(op)),
                    op.kind == OpKind::kRecvActivation ? "RECV_F" : "RECV_B", op.microbatch);
  }
  throw std::invalid_argument("to_pytorch_csv: unknown op kind");
}

// ---- reading ----

// One parsed field: a compute or communication action (stage global, direction 0), or nothing
// (a bubble or an ignored FSDP/reduction step).
enum class ActionType { kF, kI, kB, kW, kSendF, kRecvF, kSendB, kRecvB, kIgnored };

struct Action {
  ActionType type = ActionType::kIgnored;
  int stage = -1;
  int microbatch = -1;
};

// The type names of _action_regex, longest first so that a prefix never wins.
struct TypeName {
  const char* text;
  ActionType type;
  bool has_microbatch;
};
constexpr TypeName kTypeNames[] = {
    {"REDUCE_GRAD", ActionType::kIgnored, false},
    {"UNSHARD", ActionType::kIgnored, false},
    {"RESHARD", ActionType::kIgnored, false},
    {"SEND_F", ActionType::kSendF, true},
    {"RECV_F", ActionType::kRecvF, true},
    {"SEND_B", ActionType::kSendB, true},
    {"RECV_B", ActionType::kRecvB, true},
    {"F", ActionType::kF, true},
    {"I", ActionType::kI, true},
    {"B", ActionType::kB, true},
    {"W", ActionType::kW, true},
};

// Reads one CSV file's rows into per-rank actions; every error names the row, field and text.
class CsvReader {
 public:
  explicit CsvReader(const std::string& text) { split_rows(text); }

  int num_ranks() const { return static_cast<int>(rows_.size()); }

  // Field `field` of row `rank` as zero, one or two (OVERLAP_F_B) actions.
  std::vector<Action> parse_field(int rank, int field) const {
    std::string text = trim(rows_[rank][field]);
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
      text = trim(text.substr(1, text.size() - 2));
    }
    if (text.empty()) return {};
    if (text.front() == '(') return parse_overlap(rank, field, text);
    Action a = parse_single(rank, field, text);
    if (a.type == ActionType::kIgnored) return {};
    return {a};
  }

  int num_fields(int rank) const { return static_cast<int>(rows_[rank].size()); }

 private:
  static std::string trim(const std::string& s) {
    const std::size_t first = s.find_first_not_of(" \t");
    if (first == std::string::npos) return "";
    return s.substr(first, s.find_last_not_of(" \t") - first + 1);
  }

  void split_rows(const std::string& text) {
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::vector<std::string> fields;
      std::size_t from = 0;
      for (;;) {
        const std::size_t comma = line.find(',', from);
        fields.push_back(line.substr(from, comma == std::string::npos ? comma : comma - from));
        if (comma == std::string::npos) break;
        from = comma + 1;
      }
      rows_.push_back(std::move(fields));
      start = end + 1;
    }
    DUALPIPE_CHECK(!rows_.empty(), "PyTorch CSV schedule: the file has no rows (one per rank)");
  }

  std::invalid_argument bad(int rank, int field, const std::string& text,
                            const std::string& why) const {
    return std::invalid_argument("PyTorch CSV schedule: rank " + std::to_string(rank) + " (row " +
                                 std::to_string(rank + 1) + "), field " + std::to_string(field) +
                                 " \"" + text + "\": " + why);
  }

  // Reads digits at `pos` (at most 9); advances `pos`. -1 when there are none.
  static int digits(const std::string& text, std::size_t& pos) {
    const std::size_t start = pos;
    while (pos < text.size() && pos - start < 10 &&
           std::isdigit(static_cast<unsigned char>(text[pos]))) {
      ++pos;
    }
    if (pos == start || pos - start > 9) return -1;
    return std::stoi(text.substr(start, pos - start));
  }

  Action parse_single(int rank, int field, const std::string& text) const {
    const char* expected =
        "expected <stage><F|I|B|W|SEND_F|RECV_F|SEND_B|RECV_B><microbatch>, "
        "<stage><UNSHARD|RESHARD|REDUCE_GRAD> or (<stage>F<m>;<stage>B<m>)OVERLAP_F_B";
    std::size_t pos = 0;
    Action a;
    a.stage = digits(text, pos);
    if (a.stage < 0) throw bad(rank, field, text, expected);
    const TypeName* type = nullptr;
    for (const TypeName& candidate : kTypeNames) {
      if (text.compare(pos, std::string(candidate.text).size(), candidate.text) == 0) {
        type = &candidate;
        break;
      }
    }
    if (type == nullptr) throw bad(rank, field, text, expected);
    pos += std::string(type->text).size();
    a.type = type->type;
    if (type->has_microbatch) {
      a.microbatch = digits(text, pos);
      if (a.microbatch < 0) throw bad(rank, field, text, "needs a micro-batch index");
    }
    if (pos != text.size()) throw bad(rank, field, text, expected);
    return a;
  }

  std::vector<Action> parse_overlap(int rank, int field, const std::string& text) const {
    const std::size_t close = text.find(')');
    const std::string kind = close == std::string::npos ? "" : text.substr(close + 1);
    if (close == std::string::npos || kind != "OVERLAP_F_B") {
      throw bad(rank, field, text, "expected (<forward>;<backward>)OVERLAP_F_B");
    }
    std::vector<Action> parts;
    std::stringstream inner(text.substr(1, close - 1));
    std::string part;
    while (std::getline(inner, part, ';')) {
      part = trim(part);
      if (!part.empty()) parts.push_back(parse_single(rank, field, part));
    }
    const bool forward_then_backward =
        parts.size() == 2 && parts[0].type == ActionType::kF &&
        (parts[1].type == ActionType::kB || parts[1].type == ActionType::kI);
    if (!forward_then_backward) {
      throw bad(rank, field, text,
                "OVERLAP_F_B must hold one forward then one backward (B or I), as DualPipeV's "
                "(<s>F<m>;<s'>B<m'>)");
    }
    return parts;
  }

  std::vector<std::vector<std::string>> rows_;
};

// Where each global stage lives: the rank whose row names it. Throws when two ranks name the
// same stage or a stage between 0 and the largest is never named.
Placement infer_placement(const std::vector<std::vector<std::vector<Action>>>& fields,
                          int num_ranks) {
  std::map<int, int> rank_of;  // stage -> rank
  for (int rank = 0; rank < num_ranks; ++rank) {
    for (const std::vector<Action>& actions : fields[rank]) {
      for (const Action& a : actions) {
        auto [it, inserted] = rank_of.emplace(a.stage, rank);
        DUALPIPE_CHECK(it->second == rank, "PyTorch CSV schedule: stage ", a.stage,
                       " appears on rank ", it->second, " and on rank ", rank,
                       "; a stage lives on one rank");
      }
    }
  }
  DUALPIPE_CHECK(!rank_of.empty(), "PyTorch CSV schedule: no compute action on any of the ",
                 num_ranks, " rows");
  const int num_stages = rank_of.rbegin()->first + 1;
  DUALPIPE_CHECK_EQ(static_cast<int>(rank_of.size()), num_stages,
                    "PyTorch CSV schedule: every stage 0..", num_stages - 1,
                    " must appear on some rank (stages named / stages)");
  std::vector<int> slots_used(num_ranks, 0);
  std::vector<StageLocation> locations(num_stages);
  for (const auto& [stage, rank] : rank_of) locations[stage] = {rank, slots_used[rank]++};
  for (int rank = 0; rank < num_ranks; ++rank) {
    DUALPIPE_CHECK(slots_used[rank] > 0, "PyTorch CSV schedule: rank ", rank, " (row ", rank + 1,
                   ") holds no stage");
  }
  return Placement(num_ranks, 1, num_stages, std::move(locations));
}

// The op of one action on `rank` (direction 0); for communication, the peer from the placement.
Op to_op(const Action& a, const Placement& placement, int rank) {
  const int stages = placement.num_stages();
  auto peer = [&](int stage, const char* what) {
    DUALPIPE_CHECK(stage >= 0 && stage < stages, "PyTorch CSV schedule: rank ", rank, ": ", what,
                   " of stage ", a.stage, ", micro-batch ", a.microbatch, " has no stage ", stage,
                   " at the other end (stages 0..", stages - 1, ")");
    const int other = placement.rank_of(0, stage);
    DUALPIPE_CHECK(other != rank, "PyTorch CSV schedule: rank ", rank, ": ", what, " of stage ",
                   a.stage, ", micro-batch ", a.microbatch, " goes to stage ", stage,
                   " on the same rank");
    return other;
  };
  switch (a.type) {
    case ActionType::kF: return Op::forward(0, a.stage, a.microbatch);
    case ActionType::kB:
    case ActionType::kI: return Op::backward(0, a.stage, a.microbatch, a.type == ActionType::kI);
    case ActionType::kW: return Op::weight(0, a.stage, a.microbatch);
    case ActionType::kSendF:
      return Op::send_activation(0, a.stage, a.microbatch, peer(a.stage + 1, "SEND_F"));
    case ActionType::kRecvF:
      return Op::recv_activation(0, a.stage - 1, a.microbatch, peer(a.stage - 1, "RECV_F"));
    case ActionType::kSendB:
      return Op::send_grad(0, a.stage, a.microbatch, peer(a.stage - 1, "SEND_B"));
    case ActionType::kRecvB:
      return Op::recv_grad(0, a.stage + 1, a.microbatch, peer(a.stage + 1, "RECV_B"));
    case ActionType::kIgnored: break;
  }
  throw std::invalid_argument("PyTorch CSV schedule: an ignored action has no op");
}

bool is_communication(ActionType type) {
  return type == ActionType::kSendF || type == ActionType::kRecvF || type == ActionType::kSendB ||
         type == ActionType::kRecvB;
}

std::vector<Op> compute_ops(const Program& program) {
  std::vector<Op> ops;
  for (const Op& op : program) {
    if (op.is_compute()) ops.push_back(op);
  }
  return ops;
}

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& n : names) text += (text.empty() ? "" : ", ") + n;
  return text.empty() ? "none" : text;
}

}  // namespace

std::string to_pytorch_csv(const Schedule& schedule, CsvActions actions) {
  DUALPIPE_CHECK_EQ(schedule.num_directions(), 1, "PyTorch's CSV holds one pipeline direction; \"",
                    schedule.name, "\" has more (write its one-direction form, e.g. dualpipev)");
  std::string csv;
  for (const Program& program : schedule.programs) {
    std::string row;
    for (const Op& op : program) {
      if (actions == CsvActions::kComputeOnly && !op.is_compute()) continue;
      row += (row.empty() ? "" : ",") + to_action(op);
    }
    csv += row + "\r\n";
  }
  return csv;
}

std::vector<std::string> schedules_with_same_compute(const Schedule& schedule) {
  std::vector<std::string> names;
  for (const std::string& name : schedule_names()) {
    if (!schedule_facts(name).accepts(schedule.num_ranks(), schedule.num_microbatches)) continue;
    if (!(schedule_placement(name, schedule.num_ranks()) == schedule.placement)) continue;
    const Schedule built = build_schedule(name, schedule.num_ranks(), schedule.num_microbatches);
    bool same = true;
    for (int r = 0; r < schedule.num_ranks() && same; ++r) {
      same = compute_ops(built.programs[r]) == compute_ops(schedule.programs[r]);
    }
    if (same) names.push_back(name);
  }
  return names;
}

Schedule parse_pytorch_csv(const std::string& text, const std::string& name) {
  CsvReader reader(text);
  const int num_ranks = reader.num_ranks();
  check_size_limits(num_ranks, 0);
  std::vector<std::vector<std::vector<Action>>> fields(num_ranks);
  bool has_communication = false;
  int max_microbatch = -1;
  for (int rank = 0; rank < num_ranks; ++rank) {
    for (int f = 0; f < reader.num_fields(rank); ++f) {
      std::vector<Action> actions = reader.parse_field(rank, f);
      for (const Action& a : actions) {
        has_communication = has_communication || is_communication(a.type);
        max_microbatch = std::max(max_microbatch, a.microbatch);
      }
      if (!actions.empty()) fields[rank].push_back(std::move(actions));
    }
  }
  Schedule schedule;
  schedule.placement = infer_placement(fields, num_ranks);
  schedule.num_microbatches = max_microbatch + 1;
  check_size_limits(num_ranks, schedule.num_microbatches);
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    for (const std::vector<Action>& actions : fields[rank]) {
      if (actions.size() == 2) {  // OVERLAP_F_B: forward, then backward
        Op op = Op::forward_backward(0, actions[0].stage, actions[0].microbatch, 0,
                                     actions[1].stage, actions[1].microbatch);
        op.defer_weight_grad = actions[1].type == ActionType::kI;
        schedule.programs[rank].push_back(op);
      } else {
        schedule.programs[rank].push_back(to_op(actions[0], schedule.placement, rank));
      }
    }
  }
  if (!has_communication) insert_communication(schedule);
  if (name.empty()) {
    const std::vector<std::string> same = schedules_with_same_compute(schedule);
    if (same.size() != 1) {
      std::vector<std::string> same_placement;
      for (const std::string& n : schedule_names()) {
        try {
          if (schedule_placement(n, num_ranks) == schedule.placement) same_placement.push_back(n);
        } catch (const std::invalid_argument&) {
          // a rank count the schedule never accepts: not a candidate
        }
      }
      throw std::invalid_argument(
          "PyTorch CSV schedule (num_ranks=" + std::to_string(num_ranks) +
          ", num_microbatches=" + std::to_string(schedule.num_microbatches) + ", " +
          std::to_string(schedule.num_stages()) + " stages) names no schedule and its compute " +
          "order " + (same.empty() ? "is no registered schedule's" : "fits " + joined(same)) +
          "; name its family (schedules with this placement: " + joined(same_placement) + ")");
    }
    schedule.name = same[0];
  } else {
    schedule.name = name;
  }
  check_loaded_schedule(schedule);
  return schedule;
}

bool looks_like_pytorch_csv(const std::string& text) {
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return false;
  const char c = text[first];
  return std::isdigit(static_cast<unsigned char>(c)) || c == '(' || c == ',';
}

}  // namespace dualpipe::schedule

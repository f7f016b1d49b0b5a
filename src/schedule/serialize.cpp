#include "dualpipe/schedule/serialize.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/item.h"
#include "dualpipe/schedule/registry.h"

namespace dualpipe::schedule {
namespace {

std::string where(int rank, int position, const std::string& token) {
  std::string text = "rank " + std::to_string(rank);
  if (position >= 0) text += ", token " + std::to_string(position);
  return text + " \"" + token + "\"";
}

// Reads "<slot>.<microbatch>" at `pos`; advances `pos`. Returns false when malformed.
bool read_number(const std::string& text, std::size_t& pos, int* value) {
  std::size_t start = pos;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
  if (pos == start || pos - start > 9) return false;
  *value = std::atoi(text.substr(start, pos - start).c_str());
  return true;
}

bool read_slot_microbatch(const std::string& text, std::size_t& pos, int* slot, int* microbatch) {
  if (!read_number(text, pos, slot)) return false;
  if (pos >= text.size() || text[pos] != '.') return false;
  ++pos;
  return read_number(text, pos, microbatch);
}

int slot_on(const Placement& placement, int rank, int direction, int stage, const Op& op) {
  if (direction < 0 || direction >= placement.num_directions() || stage < 0 ||
      stage >= placement.num_stages()) {
    throw std::invalid_argument("to_token: rank " + std::to_string(rank) + ": " + describe(op) +
                                " names no stage instance");
  }
  const StageLocation& location = placement.at(direction, stage);
  if (location.rank != rank) {
    throw std::invalid_argument("to_token: rank " + std::to_string(rank) + ": " + describe(op) +
                                " belongs to rank " + std::to_string(location.rank));
  }
  return location.slot;
}

// A file without a "placement" names its schedule: the registry knows where that schedule puts
// its stages. Unknown names get one stage per rank.
Placement infer_placement(const std::string& name, int num_ranks) {
  if (is_schedule_name(name)) return schedule_placement(name, num_ranks);
  return Placement::round_robin(num_ranks, num_ranks);
}

std::vector<StageLocation> locations_of(const Placement& placement) {
  std::vector<StageLocation> locations;
  for (int d = 0; d < placement.num_directions(); ++d) {
    for (int s = 0; s < placement.num_stages(); ++s) locations.push_back(placement.at(d, s));
  }
  return locations;
}

// Before anything is sized by them: a file's "pp" and "chunks" are bounded like a built
// schedule's.
void check_sizes(int num_ranks, int num_microbatches) {
  check_size_limits(num_ranks, num_microbatches);
}

}  // namespace

std::string to_token(const Op& op, int rank, const Placement& placement) {
  auto sm = [](int slot, int microbatch) {
    return std::to_string(slot) + "." + std::to_string(microbatch);
  };
  const std::string peer = "@" + std::to_string(op.peer);
  switch (op.kind) {
    case OpKind::kForward:
      return "F" + sm(slot_on(placement, rank, op.direction, op.stage, op), op.microbatch);
    case OpKind::kBackward:
      return "B" + sm(slot_on(placement, rank, op.direction, op.stage, op), op.microbatch) +
             (op.defer_weight_grad ? "z" : "");
    case OpKind::kWeight:
      return "W" + sm(slot_on(placement, rank, op.direction, op.stage, op), op.microbatch);
    case OpKind::kForwardBackward:
      return "FB" + sm(slot_on(placement, rank, op.direction, op.stage, op), op.microbatch) + "/" +
             sm(slot_on(placement, rank, op.backward_direction, op.backward_stage, op),
                op.backward_microbatch) +
             (op.defer_weight_grad ? "z" : "");
    case OpKind::kSendActivation:
      return "sF" + sm(slot_on(placement, rank, op.direction, op.stage, op), op.microbatch) + peer;
    case OpKind::kSendGrad:
      return "sB" + sm(slot_on(placement, rank, op.direction, op.stage, op), op.microbatch) + peer;
    // A receive names the consuming stage's slot.
    case OpKind::kRecvActivation:
      return "rF" +
             sm(slot_on(placement, rank, op.direction, consumer_stage(item_of(op)), op),
                op.microbatch) +
             peer;
    case OpKind::kRecvGrad:
      return "rB" +
             sm(slot_on(placement, rank, op.direction, consumer_stage(item_of(op)), op),
                op.microbatch) +
             peer;
  }
  throw std::invalid_argument("to_token: unknown op kind");
}

namespace {

// Reads one token of `rank`'s program, one method per form of the token. Every error names the
// rank, the token's position and the token.
class TokenParser {
 public:
  TokenParser(const std::string& token, int rank, const Placement& placement, int position)
      : token_(token), rank_(rank), placement_(placement), position_(position) {}

  Op parse() {
    DUALPIPE_CHECK(rank_ >= 0 && rank_ < placement_.num_ranks(), context(),
                   "no such rank, num_ranks=", placement_.num_ranks());
    if (token_.rfind("FB", 0) == 0) return parse_forward_backward();
    if (!token_.empty() && (token_[0] == 'F' || token_[0] == 'B' || token_[0] == 'W')) {
      return parse_compute();
    }
    if (token_.size() >= 2 && (token_[0] == 's' || token_[0] == 'r') &&
        (token_[1] == 'F' || token_[1] == 'B')) {
      return parse_transfer();
    }
    throw malformed();
  }

 private:
  std::string context() const { return where(rank_, position_, token_) + ": "; }

  std::invalid_argument malformed() const {
    return std::invalid_argument(
        context() +
        "expected F<slot>.<m>, B<slot>.<m>[z], W<slot>.<m>, FB<slot>.<m>/<slot>.<m>, or "
        "sF/rF/sB/rB<slot>.<m>@<peer>");
  }

  // The stage that `slot` on this rank holds.
  StageId stage_in(int slot) const {
    DUALPIPE_CHECK(slot < placement_.num_slots(rank_), context(), "rank has no slot ", slot,
                   " (it has ", placement_.num_slots(rank_), ")");
    return placement_.stage_at(rank_, slot);
  }

  // Consumes the 'z' (input gradient only) that may end a backward; says whether there was one.
  bool read_deferred() {
    const bool deferred = pos_ < token_.size() && token_[pos_] == 'z';
    if (deferred) ++pos_;
    return deferred;
  }

  // `op`, once nothing is left of the token.
  Op finish(const Op& op) const {
    if (pos_ != token_.size()) throw malformed();
    return op;
  }

  // FB<slot>.<m>/<slot>.<m>[z]
  Op parse_forward_backward() {
    pos_ = 2;
    int slot = 0, microbatch = 0, backward_slot = 0, backward_microbatch = 0;
    if (!read_slot_microbatch(token_, pos_, &slot, &microbatch) || pos_ >= token_.size() ||
        token_[pos_++] != '/' ||
        !read_slot_microbatch(token_, pos_, &backward_slot, &backward_microbatch)) {
      throw malformed();
    }
    const bool deferred = read_deferred();
    const StageId f = stage_in(slot);
    const StageId b = stage_in(backward_slot);
    Op op = Op::forward_backward(f.direction, f.stage, microbatch, b.direction, b.stage,
                                 backward_microbatch);
    op.defer_weight_grad = deferred;
    return finish(op);
  }

  // F<slot>.<m>, B<slot>.<m>[z] or W<slot>.<m>
  Op parse_compute() {
    pos_ = 1;
    int slot = 0, microbatch = 0;
    if (!read_slot_microbatch(token_, pos_, &slot, &microbatch)) throw malformed();
    const StageId id = stage_in(slot);
    if (token_[0] == 'F') return finish(Op::forward(id.direction, id.stage, microbatch));
    if (token_[0] == 'W') return finish(Op::weight(id.direction, id.stage, microbatch));
    const bool deferred = read_deferred();
    return finish(Op::backward(id.direction, id.stage, microbatch, deferred));
  }

  // sF, rF, sB or rB<slot>.<m>@<peer>
  Op parse_transfer() {
    pos_ = 2;
    int slot = 0, microbatch = 0, peer = 0;
    if (!read_slot_microbatch(token_, pos_, &slot, &microbatch) || pos_ >= token_.size() ||
        token_[pos_++] != '@' || !read_number(token_, pos_, &peer)) {
      throw malformed();
    }
    DUALPIPE_CHECK(peer < placement_.num_ranks(), context(), "no peer rank ", peer,
                   ", num_ranks=", placement_.num_ranks());
    const StageId id = stage_in(slot);
    const bool send = token_[0] == 's';
    const bool grad = token_[1] == 'B';
    // A receive names the consuming stage's slot; the op names the producing stage (whose
    // consumer is that slot's stage).
    const std::optional<Item> received =
        grad ? backward_input(id.direction, id.stage, microbatch, placement_.num_stages())
             : forward_input(id.direction, id.stage, microbatch);
    const int stage = send ? id.stage : (received ? received->stage : -1);
    DUALPIPE_CHECK(stage >= 0 && stage < placement_.num_stages(), context(), "stage ", id.stage,
                   " of direction ", id.direction, " has no ", grad ? "next" : "previous",
                   " stage to receive from");
    const Item item{grad ? ItemKind::kGrad : ItemKind::kActivation, id.direction, stage,
                    microbatch};
    return finish(send ? send_op(item, peer) : recv_op(item, peer));
  }

  const std::string& token_;
  const int rank_;
  const Placement& placement_;
  const int position_;
  std::size_t pos_ = 0;  // where in token_ reading goes on
};

}  // namespace

Op parse_token(const std::string& token, int rank, const Placement& placement, int position) {
  return TokenParser(token, rank, placement, position).parse();
}

nlohmann::json to_oracle_json(const Schedule& schedule) {
  nlohmann::json ranks = nlohmann::json::array();
  for (int rank = 0; rank < static_cast<int>(schedule.programs.size()); ++rank) {
    nlohmann::json tokens = nlohmann::json::array();
    for (const Op& op : schedule.programs[rank]) {
      tokens.push_back(to_token(op, rank, schedule.placement));
    }
    ranks.push_back(std::move(tokens));
  }
  nlohmann::json json;
  json["schedule"] = schedule.name;
  json["pp"] = schedule.num_ranks();
  json["chunks"] = schedule.num_microbatches;
  json["ranks"] = std::move(ranks);
  return json;
}

nlohmann::json to_json(const Schedule& schedule) {
  nlohmann::json json = to_oracle_json(schedule);
  const Placement& placement = schedule.placement;
  nlohmann::json locations = nlohmann::json::array();
  for (const StageLocation& location : locations_of(placement)) {
    locations.push_back({location.rank, location.slot});
  }
  json["placement"] = {{"num_ranks", placement.num_ranks()},
                       {"num_directions", placement.num_directions()},
                       {"num_stages", placement.num_stages()},
                       {"locations", std::move(locations)}};
  return json;
}

void check_loaded_schedule(const Schedule& schedule) {
  if (!is_schedule_name(schedule.name)) {
    std::string allowed;
    for (const std::string& name : schedule_names())
      allowed += (allowed.empty() ? "" : ", ") + name;
    throw std::invalid_argument("unknown schedule \"" + schedule.name + "\", allowed: " + allowed);
  }
  check_size_limits(schedule.num_ranks(), schedule.num_microbatches);
  long long max_microbatch = -1;
  for (const Program& program : schedule.programs) {
    for (const Op& op : program) {
      max_microbatch = std::max<long long>(max_microbatch, op.microbatch);
      if (op.kind == OpKind::kForwardBackward) {
        max_microbatch = std::max<long long>(max_microbatch, op.backward_microbatch);
      }
    }
  }
  const long long directions = schedule.num_directions();
  const long long implied = directions * (max_microbatch + 1);
  if (schedule.num_microbatches != implied) {
    throw std::invalid_argument(
        "num_microbatches (\"chunks\") is " + std::to_string(schedule.num_microbatches) +
        " but the ops use micro-batches 0.." + std::to_string(max_microbatch) + " in each of " +
        std::to_string(directions) +
        " direction(s), which makes num_microbatches=" + std::to_string(implied));
  }
}

Schedule schedule_from_json(const nlohmann::json& json) {
  try {
    if (!json.is_object()) throw std::invalid_argument("schedule JSON must be an object");
    for (const char* key : {"schedule", "pp", "chunks", "ranks"}) {
      if (!json.contains(key)) {
        throw std::invalid_argument(std::string("schedule JSON lacks \"") + key + "\"");
      }
    }
    Schedule schedule;
    schedule.name = json.at("schedule").get<std::string>();
    const int num_ranks = json.at("pp").get<int>();
    schedule.num_microbatches = json.at("chunks").get<int>();
    check_sizes(num_ranks, schedule.num_microbatches);
    if (json.contains("placement")) {
      const nlohmann::json& p = json.at("placement");
      std::vector<StageLocation> locations;
      for (const nlohmann::json& location : p.at("locations")) {
        if (!location.is_array() || location.size() != 2) {
          throw std::invalid_argument("placement location must be [rank, slot], got " +
                                      location.dump());
        }
        locations.push_back({location[0].get<int>(), location[1].get<int>()});
      }
      schedule.placement =
          Placement(p.at("num_ranks").get<int>(), p.at("num_directions").get<int>(),
                    p.at("num_stages").get<int>(), std::move(locations));
      if (schedule.placement.num_ranks() != num_ranks) {
        throw std::invalid_argument(
            "placement num_ranks=" + std::to_string(schedule.placement.num_ranks()) +
            " differs from pp=" + std::to_string(num_ranks));
      }
    } else {
      schedule.placement = infer_placement(schedule.name, num_ranks);
    }
    const nlohmann::json& ranks = json.at("ranks");
    if (!ranks.is_array() || static_cast<int>(ranks.size()) != num_ranks) {
      throw std::invalid_argument("\"ranks\" must be an array of pp=" + std::to_string(num_ranks) +
                                  " token lists");
    }
    schedule.programs.resize(num_ranks);
    for (int rank = 0; rank < num_ranks; ++rank) {
      const nlohmann::json& tokens = ranks[rank];
      if (!tokens.is_array()) {
        throw std::invalid_argument("rank " + std::to_string(rank) + ": tokens must be an array");
      }
      for (int i = 0; i < static_cast<int>(tokens.size()); ++i) {
        if (!tokens[i].is_string()) {
          throw std::invalid_argument("rank " + std::to_string(rank) + ", token " +
                                      std::to_string(i) + " " + tokens[i].dump() +
                                      ": not a string");
        }
        const std::string& token = tokens[i].get_ref<const std::string&>();
        if (token == "|") continue;
        schedule.programs[rank].push_back(parse_token(token, rank, schedule.placement, i));
      }
    }
    check_loaded_schedule(schedule);
    return schedule;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("malformed schedule JSON: ") + e.what());
  } catch (const std::out_of_range& e) {
    throw std::invalid_argument(std::string("malformed schedule JSON: ") + e.what());
  }
}

Schedule parse_schedule_json(const std::string& text) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("bad schedule JSON: ") + e.what());
  }
  return schedule_from_json(json);
}

std::string to_text(const Schedule& schedule) {
  std::ostringstream out;
  const Placement& placement = schedule.placement;
  out << "schedule " << schedule.name << "\n";
  out << "num_ranks " << schedule.num_ranks() << "\n";
  out << "num_microbatches " << schedule.num_microbatches << "\n";
  out << "placement " << placement.num_directions() << " " << placement.num_stages();
  for (const StageLocation& location : locations_of(placement)) {
    out << " " << location.rank << ":" << location.slot;
  }
  out << "\n";
  for (int rank = 0; rank < static_cast<int>(schedule.programs.size()); ++rank) {
    out << "rank " << rank << ":";
    for (const Op& op : schedule.programs[rank]) out << " " << to_token(op, rank, placement);
    out << "\n";
  }
  return out.str();
}

namespace {

// Reads the text form line by line, skipping blank lines and comments. Every error names the
// line number and the line.
class TextReader {
 public:
  explicit TextReader(const std::string& text) : in_(text) {}

  // The rest of the next line, which must be "<key> <value>".
  std::string header(const std::string& key) {
    advance_before(key);
    if (line_.rfind(key + " ", 0) != 0) throw bad("expected \"" + key + " ...\"");
    return line_.substr(key.size() + 1);
  }

  // "placement <num_directions> <num_stages> <rank>:<slot> ..." for `num_ranks` ranks.
  Placement placement(int num_ranks) {
    std::istringstream words(header("placement"));
    std::string word;
    words >> word;
    const int num_directions = to_int(word);
    words >> word;
    const int num_stages = to_int(word);
    std::vector<StageLocation> locations;
    while (words >> word) {
      const std::size_t colon = word.find(':');
      if (colon == std::string::npos) throw bad("expected <rank>:<slot>, got \"" + word + "\"");
      locations.push_back({to_int(word.substr(0, colon)), to_int(word.substr(colon + 1))});
    }
    return Placement(num_ranks, num_directions, num_stages, std::move(locations));
  }

  // The ops of the next line, which must be "rank <rank>: <tokens...>".
  Program program(int rank, const Placement& placement) {
    const std::string key = "rank " + std::to_string(rank) + ":";
    advance_before(key);
    if (line_.rfind(key, 0) != 0) throw bad("expected \"" + key + " <tokens>\"");
    std::istringstream words(line_.substr(key.size()));
    Program program;
    std::string token;
    for (int i = 0; words >> token; ++i) {
      if (token == "|") continue;
      program.push_back(parse_token(token, rank, placement, i));
    }
    return program;
  }

  // Throws where a line other than a blank one or a comment is left.
  void expect_end() {
    if (next_line()) throw bad("unexpected line after the last rank");
  }

  int to_int(const std::string& word) const {
    std::size_t pos = 0;
    if (word.empty() || (!std::isdigit(static_cast<unsigned char>(word[0])) && word[0] != '-')) {
      throw bad("expected a number, got \"" + word + "\"");
    }
    int value = 0;
    try {
      value = std::stoi(word, &pos);
    } catch (const std::exception&) {
      throw bad("number out of range: \"" + word + "\"");
    }
    if (pos != word.size()) throw bad("expected a number, got \"" + word + "\"");
    return value;
  }

 private:
  std::invalid_argument bad(const std::string& why) const {
    return std::invalid_argument("schedule text line " + std::to_string(line_number_) + ": " + why +
                                 " (\"" + line_ + "\")");
  }

  // Moves to the next line that is neither blank nor a comment; false where there is none.
  bool next_line() {
    while (std::getline(in_, line_)) {
      ++line_number_;
      if (!line_.empty() && line_[0] != '#') return true;
    }
    return false;
  }

  // next_line(), or an error saying that the text ends before `what`.
  void advance_before(const std::string& what) {
    if (!next_line()) throw std::invalid_argument("schedule text ends before \"" + what + "\"");
  }

  std::istringstream in_;
  std::string line_;
  int line_number_ = 0;
};

}  // namespace

Schedule parse_schedule_text(const std::string& text) {
  TextReader reader(text);
  Schedule schedule;
  schedule.name = reader.header("schedule");
  const int num_ranks = reader.to_int(reader.header("num_ranks"));
  schedule.num_microbatches = reader.to_int(reader.header("num_microbatches"));
  check_sizes(num_ranks, schedule.num_microbatches);
  schedule.placement = reader.placement(num_ranks);
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    schedule.programs[rank] = reader.program(rank, schedule.placement);
  }
  reader.expect_end();
  check_loaded_schedule(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

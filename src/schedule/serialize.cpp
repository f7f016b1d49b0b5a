#include "dualpipe/schedule/serialize.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <vector>

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

Op parse_token(const std::string& token, int rank, const Placement& placement, int position) {
  auto bad = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument(where(rank, position, token) + ": " + why);
  };
  if (rank < 0 || rank >= placement.num_ranks()) {
    throw bad("no such rank, num_ranks=" + std::to_string(placement.num_ranks()));
  }
  auto stage_in = [&](int slot) {
    if (slot >= placement.num_slots(rank)) {
      throw bad("rank has no slot " + std::to_string(slot) + " (it has " +
                std::to_string(placement.num_slots(rank)) + ")");
    }
    return placement.stage_at(rank, slot);
  };
  const char* form =
      "expected F<slot>.<m>, B<slot>.<m>[z], W<slot>.<m>, FB<slot>.<m>/<slot>.<m>, or "
      "sF/rF/sB/rB<slot>.<m>@<peer>";
  std::size_t pos = 0;
  int slot = 0;
  int microbatch = 0;
  auto finish = [&](const Op& op) {
    if (pos != token.size()) throw bad(form);
    return op;
  };
  if (token.rfind("FB", 0) == 0) {
    pos = 2;
    int slot2 = 0;
    int microbatch2 = 0;
    if (!read_slot_microbatch(token, pos, &slot, &microbatch) || pos >= token.size() ||
        token[pos++] != '/' || !read_slot_microbatch(token, pos, &slot2, &microbatch2)) {
      throw bad(form);
    }
    bool deferred = pos < token.size() && token[pos] == 'z';
    if (deferred) ++pos;
    StageId f = stage_in(slot);
    StageId b = stage_in(slot2);
    Op op =
        Op::forward_backward(f.direction, f.stage, microbatch, b.direction, b.stage, microbatch2);
    op.defer_weight_grad = deferred;
    return finish(op);
  }
  if (!token.empty() && (token[0] == 'F' || token[0] == 'B' || token[0] == 'W')) {
    pos = 1;
    if (!read_slot_microbatch(token, pos, &slot, &microbatch)) throw bad(form);
    StageId id = stage_in(slot);
    if (token[0] == 'F') return finish(Op::forward(id.direction, id.stage, microbatch));
    if (token[0] == 'W') return finish(Op::weight(id.direction, id.stage, microbatch));
    bool deferred = pos < token.size() && token[pos] == 'z';
    if (deferred) ++pos;
    return finish(Op::backward(id.direction, id.stage, microbatch, deferred));
  }
  if (token.size() >= 2 && (token[0] == 's' || token[0] == 'r') &&
      (token[1] == 'F' || token[1] == 'B')) {
    pos = 2;
    int peer = 0;
    if (!read_slot_microbatch(token, pos, &slot, &microbatch) || pos >= token.size() ||
        token[pos++] != '@' || !read_number(token, pos, &peer)) {
      throw bad(form);
    }
    if (peer >= placement.num_ranks()) {
      throw bad("no peer rank " + std::to_string(peer) +
                ", num_ranks=" + std::to_string(placement.num_ranks()));
    }
    StageId id = stage_in(slot);
    const bool send = token[0] == 's';
    const bool grad = token[1] == 'B';
    // A receive names the consuming stage's slot; the op names the producing stage (whose
    // consumer is that slot's stage).
    const std::optional<Item> received =
        grad ? backward_input(id.direction, id.stage, microbatch, placement.num_stages())
             : forward_input(id.direction, id.stage, microbatch);
    int stage = send ? id.stage : (received ? received->stage : -1);
    if (stage < 0 || stage >= placement.num_stages()) {
      throw bad("stage " + std::to_string(id.stage) + " of direction " +
                std::to_string(id.direction) + " has no " + (grad ? "next" : "previous") +
                " stage to receive from");
    }
    const Item item{grad ? ItemKind::kGrad : ItemKind::kActivation, id.direction, stage,
                    microbatch};
    return finish(send ? send_op(item, peer) : recv_op(item, peer));
  }
  throw bad(form);
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

Schedule parse_schedule_text(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  int line_number = 0;
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("schedule text line " + std::to_string(line_number) + ": " + why +
                                 " (\"" + line + "\")");
  };
  auto header = [&](const std::string& key) {
    while (std::getline(in, line)) {
      ++line_number;
      if (line.empty() || line[0] == '#') continue;
      if (line.rfind(key + " ", 0) != 0) throw bad("expected \"" + key + " ...\"");
      return line.substr(key.size() + 1);
    }
    throw std::invalid_argument("schedule text ends before \"" + key + "\"");
  };
  auto to_int = [&](const std::string& word) {
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
  };

  Schedule schedule;
  schedule.name = header("schedule");
  const int num_ranks = to_int(header("num_ranks"));
  schedule.num_microbatches = to_int(header("num_microbatches"));
  check_sizes(num_ranks, schedule.num_microbatches);
  {
    std::istringstream words(header("placement"));
    std::string word;
    words >> word;
    const int num_directions = to_int(word);
    words >> word;
    const int num_stages = to_int(word);
    std::vector<StageLocation> locations;
    while (words >> word) {
      std::size_t colon = word.find(':');
      if (colon == std::string::npos) throw bad("expected <rank>:<slot>, got \"" + word + "\"");
      locations.push_back({to_int(word.substr(0, colon)), to_int(word.substr(colon + 1))});
    }
    schedule.placement = Placement(num_ranks, num_directions, num_stages, std::move(locations));
  }
  schedule.programs.resize(num_ranks);
  for (int rank = 0; rank < num_ranks; ++rank) {
    const std::string key = "rank " + std::to_string(rank) + ":";
    std::string tokens;
    while (true) {
      if (!std::getline(in, line)) {
        throw std::invalid_argument("schedule text ends before \"" + key + "\"");
      }
      ++line_number;
      if (line.empty() || line[0] == '#') continue;
      if (line.rfind(key, 0) != 0) throw bad("expected \"" + key + " <tokens>\"");
      tokens = line.substr(key.size());
      break;
    }
    std::istringstream words(tokens);
    std::string token;
    for (int i = 0; words >> token; ++i) {
      if (token == "|") continue;
      schedule.programs[rank].push_back(parse_token(token, rank, schedule.placement, i));
    }
  }
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line[0] != '#') throw bad("unexpected line after the last rank");
  }
  check_loaded_schedule(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule

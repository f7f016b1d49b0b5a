#include "dualpipe/schedule/placement.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "dualpipe/check.h"

namespace dualpipe::schedule {

Placement::Placement(int num_ranks, int num_directions, int num_stages,
                     std::vector<StageLocation> locations)
    : num_ranks_(num_ranks),
      num_directions_(num_directions),
      num_stages_(num_stages),
      locations_(std::move(locations)) {
  DUALPIPE_CHECK(num_ranks >= 1 && num_directions >= 1 && num_stages >= 1,
                 "Placement needs num_ranks, num_directions, num_stages >= 1, got ", num_ranks,
                 ", ", num_directions, ", ", num_stages);
  const int num_locations = static_cast<int>(locations_.size());
  DUALPIPE_CHECK_EQ(num_locations, num_directions * num_stages, "Placement needs one location per ",
                    "stage instance");
  for (int i = 0; i < static_cast<int>(locations_.size()); ++i) {
    const StageLocation& loc = locations_[i];
    DUALPIPE_CHECK(loc.rank >= 0 && loc.rank < num_ranks && loc.slot >= 0, "Placement: direction ",
                   i / num_stages, " stage ", i % num_stages, " placed on rank ", loc.rank,
                   " slot ", loc.slot, ", allowed ranks are 0..", num_ranks - 1, " and slots >= 0");
    for (int j = 0; j < i; ++j) {
      DUALPIPE_CHECK(!(locations_[j] == loc), "Placement: rank ", loc.rank, " slot ", loc.slot,
                     " holds two stage instances");
    }
  }
}

Placement Placement::round_robin(int num_ranks, int num_stages) {
  std::vector<StageLocation> locations;
  for (int s = 0; s < num_stages; ++s) locations.push_back({s % num_ranks, s / num_ranks});
  return Placement(num_ranks, 1, num_stages, std::move(locations));
}

Placement Placement::v_shape(int num_ranks) {
  std::vector<StageLocation> locations;
  for (int s = 0; s < 2 * num_ranks; ++s) {
    locations.push_back(s < num_ranks ? StageLocation{s, 0}
                                      : StageLocation{2 * num_ranks - 1 - s, 1});
  }
  return Placement(num_ranks, 1, 2 * num_ranks, std::move(locations));
}

Placement Placement::bidirectional(int num_ranks) {
  std::vector<StageLocation> locations;
  for (int s = 0; s < num_ranks; ++s) locations.push_back({s, 0});
  for (int s = 0; s < num_ranks; ++s) locations.push_back({num_ranks - 1 - s, 1});
  return Placement(num_ranks, 2, num_ranks, std::move(locations));
}

const StageLocation& Placement::at(int direction, int stage) const {
  if (direction < 0 || direction >= num_directions_ || stage < 0 || stage >= num_stages_) {
    throw std::out_of_range("no stage instance direction=" + std::to_string(direction) +
                            " stage=" + std::to_string(stage) + " (directions 0.." +
                            std::to_string(num_directions_ - 1) + ", stages 0.." +
                            std::to_string(num_stages_ - 1) + ")");
  }
  return locations_[direction * num_stages_ + stage];
}

std::vector<StageId> Placement::stages_on(int rank) const {
  std::vector<std::pair<int, StageId>> found;
  for (int i = 0; i < static_cast<int>(locations_.size()); ++i) {
    if (locations_[i].rank == rank) {
      found.push_back({locations_[i].slot, StageId{i / num_stages_, i % num_stages_}});
    }
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<StageId> ids;
  for (const auto& f : found) ids.push_back(f.second);
  return ids;
}

int Placement::num_slots(int rank) const {
  int slots = 0;
  for (const StageLocation& loc : locations_) {
    if (loc.rank == rank) slots = std::max(slots, loc.slot + 1);
  }
  return slots;
}

StageId Placement::stage_at(int rank, int slot) const {
  for (int i = 0; i < static_cast<int>(locations_.size()); ++i) {
    if (locations_[i].rank == rank && locations_[i].slot == slot) {
      return StageId{i / num_stages_, i % num_stages_};
    }
  }
  throw std::out_of_range("rank " + std::to_string(rank) + " has no stage in slot " +
                          std::to_string(slot));
}

std::vector<int> Placement::directions_starting_on(int rank) const {
  std::vector<int> directions;
  for (int d = 0; d < num_directions_; ++d) {
    if (rank_of(d, 0) == rank) directions.push_back(d);
  }
  return directions;
}

std::vector<int> Placement::directions_ending_on(int rank) const {
  std::vector<int> directions;
  for (int d = 0; d < num_directions_; ++d) {
    if (rank_of(d, num_stages_ - 1) == rank) directions.push_back(d);
  }
  return directions;
}

bool operator==(const Placement& a, const Placement& b) {
  return a.num_ranks_ == b.num_ranks_ && a.num_directions_ == b.num_directions_ &&
         a.num_stages_ == b.num_stages_ && a.locations_ == b.locations_;
}

}  // namespace dualpipe::schedule

#pragma once
// Where each pipeline stage instance lives: (direction, stage) -> (rank, slot). `slot` is the
// index of the stage module among the modules held by that rank (the reference's
// `self.module[slot]`): DualPipe rank r holds (0, r) in slot 0 and (1, PP-1-r) in slot 1;
// DualPipeV rank r holds stage r in slot 0 and stage 2*PP-1-r in slot 1.

#include <vector>

namespace dualpipe::schedule {

struct StageLocation {
  int rank = -1;
  int slot = -1;
  friend bool operator==(const StageLocation& a, const StageLocation& b) {
    return a.rank == b.rank && a.slot == b.slot;
  }
};

struct StageId {
  int direction = 0;
  int stage = 0;
  friend bool operator==(const StageId& a, const StageId& b) {
    return a.direction == b.direction && a.stage == b.stage;
  }
};

class Placement {
 public:
  Placement() = default;
  // `locations[direction * num_stages + stage]`. Throws std::invalid_argument when a rank or
  // slot is out of range or two stage instances share one (rank, slot).
  Placement(int num_ranks, int num_directions, int num_stages,
            std::vector<StageLocation> locations);

  // One direction, stage s on rank s % num_ranks, slot s / num_ranks (1F1B, GPipe,
  // interleaved 1F1B when num_stages is a multiple of num_ranks).
  static Placement round_robin(int num_ranks, int num_stages);
  // One direction, 2*num_ranks stages in a V: stage s < R on rank s, else rank 2R-1-s.
  static Placement v_shape(int num_ranks);
  // Two directions of num_ranks stages: (0, s) on rank s slot 0, (1, s) on rank R-1-s slot 1.
  static Placement bidirectional(int num_ranks);

  int num_ranks() const { return num_ranks_; }
  int num_directions() const { return num_directions_; }
  int num_stages() const { return num_stages_; }

  // Throws std::out_of_range with the values when (direction, stage) does not exist.
  const StageLocation& at(int direction, int stage) const;
  int rank_of(int direction, int stage) const { return at(direction, stage).rank; }
  // The stage instances a rank holds, ordered by slot.
  std::vector<StageId> stages_on(int rank) const;
  // Number of slots (stage modules) on `rank`.
  int num_slots(int rank) const;
  // Inverse of at(): which stage instance sits in (rank, slot). Throws std::out_of_range.
  StageId stage_at(int rank, int slot) const;
  // Directions whose first stage is on `rank` (that rank feeds their inputs), ascending.
  std::vector<int> directions_starting_on(int rank) const;
  // Directions whose last stage is on `rank` (that rank holds their labels and loss), ascending.
  std::vector<int> directions_ending_on(int rank) const;

  friend bool operator==(const Placement& a, const Placement& b);

 private:
  int num_ranks_ = 0;
  int num_directions_ = 0;
  int num_stages_ = 0;
  std::vector<StageLocation> locations_;
};

}  // namespace dualpipe::schedule

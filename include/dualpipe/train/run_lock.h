#pragma once
// The lock of a run folder: while a job writes a run folder (metrics, checkpoints, pictures) no
// other job may, or their metrics and checkpoints interleave. The lock is an flock(2) on
// <run_dir>/.lock taken without waiting; the file names its holder ("pid 123 on host h since
// 2026-12-01T23:59:00Z") for the message a second job prints. The kernel drops an flock when the
// last descriptor of it closes, so a job killed with SIGKILL leaves no stale lock behind; the
// file itself stays (removing it would race with a job opening it).
//
// NOTE: the descriptor is inherited by child processes (no O_CLOEXEC): the ranks that
// `dualpipe train` starts hold the lock too, so a rank left running after its launcher was
// killed still keeps the folder locked until it ends.

#include <string>

namespace dualpipe::train {

class RunFolderLock {
 public:
  // Creates `run_dir` when missing and takes its lock. Does not block: throws std::runtime_error
  // "run folder DIR is in use by another job: pid P on host H since T (...)" when another open
  // of the lock file holds it (another process, or another RunFolderLock in this one), and
  // std::runtime_error naming the path and errno text when the lock file cannot be opened.
  explicit RunFolderLock(const std::string& run_dir);
  // Empties the lock file and releases the lock (unless inherited descriptors still hold it).
  ~RunFolderLock();
  RunFolderLock(const RunFolderLock&) = delete;
  RunFolderLock& operator=(const RunFolderLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// The holder named in `run_dir`'s lock file ("pid P on host H since T"), or "" when there is no
// lock file or it names nobody. Reading it tells nothing about whether the lock is held.
std::string run_folder_holder(const std::string& run_dir);

}  // namespace dualpipe::train

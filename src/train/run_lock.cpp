#include "dualpipe/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

std::string lock_path(const std::string& run_dir) {
  return (fs::path(run_dir) / ".lock").string();
}

std::string holder_text() {
  char host[256] = "unknown";
  ::gethostname(host, sizeof(host) - 1);
  char since[32] = "";
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  std::strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return "pid " + std::to_string(::getpid()) + " on host " + host + " since " + since;
}

}  // namespace

RunFolderLock::RunFolderLock(const std::string& run_dir) : path_(lock_path(run_dir)) {
  fs::create_directories(run_dir);
  // NOTE: no O_CLOEXEC on purpose, see the header.
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT, 0644);
  if (fd_ < 0) {
    throw std::runtime_error("cannot open the run folder lock " + path_ + ": " +
                             std::strerror(errno));
  }
  while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    const int error = errno;
    ::close(fd_);
    if (error != EWOULDBLOCK) {
      throw std::runtime_error("cannot lock the run folder lock " + path_ + ": " +
                               std::strerror(error));
    }
    std::string holder = run_folder_holder(run_dir);
    if (holder.empty()) holder = "its lock file names no holder yet";
    throw std::runtime_error("run folder " + run_dir + " is in use by another job: " + holder +
                             " (lock " + path_ +
                             "); wait for that job to end, or give this one another --run-dir");
  }
  const std::string text = holder_text() + "\n";
  // NOTE: the holder line is for people; a failure to write it leaves the lock held and valid.
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] const ssize_t n = ::pwrite(fd_, text.data(), text.size(), 0);
  }
}

RunFolderLock::~RunFolderLock() {
  [[maybe_unused]] const int ignored = ::ftruncate(fd_, 0);
  ::close(fd_);  // releases the flock once no inherited descriptor holds it
}

std::string run_folder_holder(const std::string& run_dir) {
  std::ifstream in(lock_path(run_dir));
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace dualpipe::train

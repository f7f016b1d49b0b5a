#pragma once
// Test helper: a small tmpfs mounted for a test (root or CAP_SYS_ADMIN), to fill a disk for real.

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

namespace dualpipe::train::testing {

// A tmpfs of `size` (e.g. "64k") mounted at `at`, unmounted (lazily) and removed at the end.
// When the mount fails, mounted() is false and error() says why (tests then skip).
class SmallDisk {
 public:
  SmallDisk(const std::filesystem::path& at, const std::string& size) : at_(at) {
    std::filesystem::create_directories(at);
    const std::string options = "size=" + size;
    mounted_ = ::mount("tmpfs", at.c_str(), "tmpfs", 0, options.c_str()) == 0;
    if (!mounted_) error_ = std::strerror(errno);
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(at_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(at_, ec);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::filesystem::path at_;
  bool mounted_ = false;
  std::string error_;
};

}  // namespace dualpipe::train::testing

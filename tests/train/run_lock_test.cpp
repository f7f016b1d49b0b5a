#include "dualpipe/train/run_lock.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

fs::path temp_run(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("dualpipe_lock_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

// The message of the exception `f` throws ("" when it throws none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(RunFolderLock, SecondHolderFailsNamingTheFirstUntilItIsReleased) {
  const fs::path dir = temp_run("second");
  {
    const RunFolderLock first(dir.string());
    EXPECT_EQ(
        run_folder_holder(dir.string()).rfind("pid " + std::to_string(::getpid()) + " on host ", 0),
        0u)
        << run_folder_holder(dir.string());
    const std::string error = error_of([&] { RunFolderLock second(dir.string()); });
    EXPECT_NE(error.find("is in use by another job: pid " + std::to_string(::getpid())),
              std::string::npos)
        << error;
    EXPECT_NE(error.find(dir.string()), std::string::npos) << error;
  }
  EXPECT_EQ(run_folder_holder(dir.string()), "");
  EXPECT_EQ(error_of([&] { RunFolderLock again(dir.string()); }), "");
  fs::remove_all(dir);
}

// A holder that dies without releasing (here: _exit in a child, like SIGKILL) leaves no lock.
TEST(RunFolderLock, DeadHolderDoesNotBlock) {
  const fs::path dir = temp_run("dead");
  const pid_t child = ::fork();
  if (child == 0) {
    new RunFolderLock(dir.string());  // never released: the process just ends
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(run_folder_holder(dir.string()).find("pid " + std::to_string(child)),
            std::string::npos);
  EXPECT_EQ(error_of([&] { RunFolderLock after(dir.string()); }), "");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dualpipe::train

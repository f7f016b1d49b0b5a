// A rank program for the launcher tests: `launch_worker MODE`, started by `dualpipe launch`.
//   allreduce: join, allreduce (rank + 1), print the sum; exit 0.
//   exit:      join; rank 1 exits with status 3 while the others wait in an allreduce.
//   kill:      join; rank 1 kills itself with SIGKILL while the others wait in an allreduce.
//   hang:      join; rank 1 sleeps while the others wait in an allreduce until their timeout.
//   throw:     join; rank 1 throws (std::runtime_error) while the others wait in an allreduce.
//   sockets:   join; print every TCP socket this process listens on at an address other than
//              loopback; exit 4 if there is one (a local job must not be reachable).
// Further arguments are ignored (tests/launch/ passes a folder to find the processes by).
// Not a gtest: tests/runtime/launch_test.cpp and tests/launch/ run it through `dualpipe launch`.
#include <ATen/ATen.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dualpipe/runtime/launcher.h"
#include "dualpipe/runtime/rendezvous.h"

namespace {

// Inodes of the sockets this process holds open.
std::set<std::string> own_socket_inodes() {
  std::set<std::string> inodes;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::string target = std::filesystem::read_symlink(entry.path(), error).string();
    if (!error && target.rfind("socket:[", 0) == 0) {
      inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  return inodes;
}

// "local_address:port" of every listening socket of this process in /proc/net/tcp or tcp6 whose
// address is not loopback (127.0.0.1 is 0100007F there; ::1 ends in 01000000).
std::vector<std::string> exposed_listeners() {
  const std::set<std::string> own = own_socket_inodes();
  std::vector<std::string> exposed;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      if (state != "0A" || own.count(inode) == 0) continue;  // 0A: LISTEN
      const std::string address = local.substr(0, local.find(':'));
      const bool loopback = address == "0100007F" || address == "00000000000000000000000001000000";
      if (!loopback) exposed.push_back(std::string(table) + " " + local);
    }
  }
  return exposed;
}

double allreduce_sum(const dualpipe::runtime::DistributedContext& context) {
  std::vector<at::Tensor> tensors = {
      at::full({4}, static_cast<double>(context.env.rank + 1), at::kDouble)};
  dualpipe::runtime::wait_collective(context.world->allreduce(tensors), *context.world,
                                     dualpipe::runtime::world_members(context),
                                     "allreduce of the ranks' numbers");
  return tensors[0][0].item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "allreduce";
  int rank = -1;
  try {
    dualpipe::runtime::CommunicatorOptions options;
    options.timeout = std::chrono::seconds(5);
    dualpipe::runtime::DistributedContext context = dualpipe::runtime::init_distributed(options);
    rank = context.env.rank;
    const double sum = allreduce_sum(context);
    std::cout << "rank " << rank << " of " << context.env.world_size << " joined via "
              << context.env.launcher << ", allreduce sum " << sum << std::endl;
    std::cerr << "rank " << rank << " stderr ";  // Partial line, finished below.
    std::cerr << "line" << std::endl;
    if (mode == "allreduce") return 0;
    if (mode == "sockets") {
      const std::vector<std::string> exposed = exposed_listeners();
      for (const std::string& listener : exposed) {
        std::cout << "rank " << rank << " listens on a non-loopback address: " << listener
                  << std::endl;
      }
      allreduce_sum(context);  // keep every rank's sockets open until all looked
      return exposed.empty() ? 0 : 4;
    }
    if (rank == 1) {
      if (mode == "exit") {
        std::cout << "rank 1 exiting with status 3" << std::endl;
        std::exit(3);
      }
      if (mode == "kill") {
        std::cout << "rank 1 killing itself" << std::endl;
        std::raise(SIGKILL);
      }
      if (mode == "throw") throw std::runtime_error("an exception thrown on purpose");
      if (mode == "hang") {
        ::sleep(3600);
        return 0;
      }
    }
    allreduce_sum(context);
    std::cerr << "rank " << rank << ": second allreduce unexpectedly completed" << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "rank " << rank << " failed: " << e.what() << std::endl;
    dualpipe::runtime::report_rank_failure(e.what());
    return 1;
  }
}

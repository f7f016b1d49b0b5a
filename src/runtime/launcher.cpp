#include "dualpipe/runtime/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <stdexcept>

#include "dualpipe/runtime/distributed_env.h"

extern char** environ;

namespace dualpipe::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// NOTE: a line longer than this is forwarded in pieces, so one rank cannot grow memory unbounded.
constexpr size_t kMaxLine = 64 * 1024;
// How long to keep reading pipes after the last rank ended (a grandchild may hold them open).
constexpr std::chrono::milliseconds kDrainTime{1000};

std::runtime_error system_error(const std::string& what) {
  return std::runtime_error("dualpipe launch: " + what + ": " + std::strerror(errno));
}

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // The reader went away; the ranks' output has nowhere to go.
    done += static_cast<size_t>(n);
  }
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

bool failed(int status) {
  return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

struct Stream {
  int fd = -1;
  int sink = -1;
  std::string pending;
};

struct RankProcess {
  pid_t pid = -1;
  bool running = false;
  int status = 0;
  Stream out;
  Stream err;
};

// Writes every complete line in `stream.pending` with the rank prefix; at EOF also the rest.
void forward_lines(int rank, Stream& stream, bool at_eof) {
  const std::string prefix = "[rank " + std::to_string(rank) + "] ";
  size_t start = 0;
  while (true) {
    const size_t newline = stream.pending.find('\n', start);
    if (newline == std::string::npos) break;
    write_all(stream.sink, prefix + stream.pending.substr(start, newline - start + 1));
    start = newline + 1;
  }
  stream.pending.erase(0, start);
  if (!stream.pending.empty() && (at_eof || stream.pending.size() >= kMaxLine)) {
    write_all(stream.sink, prefix + stream.pending + "\n");
    stream.pending.clear();
  }
}

// Reads what is available; closes the stream at EOF.
void drain(int rank, Stream& stream) {
  char buffer[16384];
  const ssize_t n = ::read(stream.fd, buffer, sizeof buffer);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    forward_lines(rank, stream, /*at_eof=*/true);
    ::close(stream.fd);
    stream.fd = -1;
    return;
  }
  stream.pending.append(buffer, static_cast<size_t>(n));
  forward_lines(rank, stream, /*at_eof=*/false);
}

// Restores the signal mask and closes the signalfd however launch_local leaves.
class SignalGuard {
 public:
  explicit SignalGuard(const sigset_t& mask) {
    pthread_sigmask(SIG_BLOCK, &mask, &old_mask_);
    fd_ = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd_ < 0) {
      pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
      throw system_error("signalfd");
    }
  }
  ~SignalGuard() {
    ::close(fd_);
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  int fd() const { return fd_; }
  const sigset_t& old_mask() const { return old_mask_; }

 private:
  sigset_t old_mask_{};
  int fd_ = -1;
};

std::vector<std::string> make_environment(const LaunchOptions& options, int rank, int port) {
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const size_t eq = text.find('=');
    if (eq != std::string::npos) env[text.substr(0, eq)] = text.substr(eq + 1);
  }
  // NOTE: variables of an enclosing launcher would make the rank misdetect its world.
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID",
                           "TORCHELASTIC_RUN_ID", kTimeoutEnv}) {
    env.erase(name);
  }
  env["RANK"] = std::to_string(rank);
  env["WORLD_SIZE"] = std::to_string(options.num_ranks);
  env["LOCAL_RANK"] = std::to_string(rank);
  env["LOCAL_WORLD_SIZE"] = std::to_string(options.num_ranks);
  env["MASTER_ADDR"] = "127.0.0.1";
  env["MASTER_PORT"] = std::to_string(port);
  env["OMP_NUM_THREADS"] = "1";
  env[kLaunchedRankEnv] = "1";
  if (options.timeout_s > 0) env[kTimeoutEnv] = std::to_string(options.timeout_s);
  for (const auto& [name, value] : options.extra_env) env[name] = value;
  std::vector<std::string> result;
  for (const auto& [name, value] : env) result.push_back(name + "=" + value);
  return result;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (std::string& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

void signal_all(std::vector<RankProcess>& ranks, int sig) {
  for (RankProcess& rank : ranks) {
    // Each rank leads its own process group: the signal reaches what it started too.
    if (rank.running && ::kill(-rank.pid, sig) != 0) ::kill(rank.pid, sig);
  }
}

}  // namespace

int pick_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw system_error("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const auto error = system_error("picking a free port");
    ::close(fd);
    throw error;
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

int launch_local(const LaunchOptions& options) {
  if (options.num_ranks < 1) {
    throw std::invalid_argument("dualpipe launch needs at least one rank, got num_ranks=" +
                                std::to_string(options.num_ranks));
  }
  if (options.command.empty()) {
    throw std::invalid_argument("dualpipe launch needs a program to run (after --)");
  }
  if (options.master_port < 0 || options.master_port > 65535) {
    throw std::invalid_argument("master port must be in [0, 65535], got " +
                                std::to_string(options.master_port));
  }
  const int port = options.master_port != 0 ? options.master_port : pick_free_port();
  const int sink_err = options.stderr_fd;

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  SignalGuard signals(mask);

  std::vector<std::string> args = options.command;
  std::vector<char*> argv = pointers(args);
  std::vector<RankProcess> ranks(options.num_ranks);
  for (int k = 0; k < options.num_ranks; ++k) {
    std::vector<std::string> env_strings = make_environment(options, k, port);
    std::vector<char*> envp = pointers(env_strings);
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw system_error("pipe");
    if (::pipe2(err, O_CLOEXEC) != 0) {
      ::close(out[0]);
      ::close(out[1]);
      throw system_error("pipe");
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      const auto error = system_error("fork");
      for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
      signal_all(ranks, SIGKILL);
      for (RankProcess& rank : ranks) {
        if (rank.running) ::waitpid(rank.pid, nullptr, 0);
      }
      throw error;
    }
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      ::setpgid(0, 0);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      pthread_sigmask(SIG_SETMASK, &signals.old_mask(), nullptr);
      ::execvpe(argv[0], argv.data(), envp.data());
      const char* message = "dualpipe launch: cannot execute the program: ";
      (void)!::write(STDERR_FILENO, message, std::strlen(message));
      const char* reason = strerror(errno);
      (void)!::write(STDERR_FILENO, reason, std::strlen(reason));
      (void)!::write(STDERR_FILENO, "\n", 1);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // Also here: whichever of parent and child runs first.
    ::close(out[1]);
    ::close(err[1]);
    ranks[k].pid = pid;
    ranks[k].running = true;
    ranks[k].out = Stream{out[0], options.stdout_fd, {}};
    ranks[k].err = Stream{err[0], options.stderr_fd, {}};
  }

  int first_failed = -1;
  int interrupted_by = 0;
  bool stopping = false;
  bool killed = false;
  Clock::time_point kill_at{};
  Clock::time_point all_ended_at{};
  int num_running = options.num_ranks;

  auto stop_others = [&] {
    stopping = true;
    kill_at = Clock::now() + options.grace_period;
    signal_all(ranks, SIGTERM);
  };

  while (true) {
    // Reap (also without SIGCHLD: another thread of this process may have taken it).
    for (int k = 0; k < options.num_ranks; ++k) {
      RankProcess& rank = ranks[k];
      if (!rank.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(rank.pid, &status, WNOHANG);
      if (done != rank.pid) continue;
      rank.running = false;
      rank.status = status;
      if (--num_running == 0) all_ended_at = Clock::now();
      if (!failed(status)) continue;
      if (first_failed < 0 && !stopping) {
        first_failed = k;
        write_all(sink_err, "dualpipe launch: rank " + std::to_string(k) + " (pid " +
                                std::to_string(rank.pid) + ") " + describe(status) +
                                "; stopping the other ranks\n");
        stop_others();
      } else if (!(stopping && WIFSIGNALED(status) &&
                   (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGKILL ||
                    WTERMSIG(status) == interrupted_by))) {
        write_all(sink_err,
                  "dualpipe launch: rank " + std::to_string(k) + " " + describe(status) + "\n");
      }
    }
    bool open_pipes = false;
    for (const RankProcess& rank : ranks) open_pipes |= rank.out.fd >= 0 || rank.err.fd >= 0;
    if (num_running == 0 && (!open_pipes || Clock::now() - all_ended_at > kDrainTime)) break;
    if (stopping && !killed && num_running > 0 && Clock::now() >= kill_at) {
      killed = true;
      write_all(sink_err, "dualpipe launch: " + std::to_string(num_running) +
                              " rank(s) still running after the grace period; sending SIGKILL\n");
      signal_all(ranks, SIGKILL);
    }

    std::vector<pollfd> fds;
    std::vector<std::pair<int, Stream*>> streams;
    fds.push_back({signals.fd(), POLLIN, 0});
    for (int k = 0; k < options.num_ranks; ++k) {
      for (Stream* stream : {&ranks[k].out, &ranks[k].err}) {
        if (stream->fd < 0) continue;
        fds.push_back({stream->fd, POLLIN, 0});
        streams.emplace_back(k, stream);
      }
    }
    const int ready = ::poll(fds.data(), fds.size(), 100);
    if (ready < 0 && errno != EINTR) throw system_error("poll");
    if (ready <= 0) continue;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      while (::read(signals.fd(), &info, sizeof info) == sizeof info) {
        const int sig = static_cast<int>(info.ssi_signo);
        if (sig == SIGCHLD) continue;
        if (interrupted_by == 0 && first_failed < 0) {
          interrupted_by = sig;
          write_all(sink_err, std::string("dualpipe launch: got ") + strsignal(sig) +
                                  ", forwarding it to the ranks\n");
          stopping = true;
          kill_at = Clock::now() + options.grace_period;
          signal_all(ranks, sig);
        }
      }
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        drain(streams[i - 1].first, *streams[i - 1].second);
      }
    }
  }
  for (RankProcess& rank : ranks) {
    for (Stream* stream : {&rank.out, &rank.err}) {
      if (stream->fd >= 0) ::close(stream->fd);
    }
  }

  if (first_failed >= 0) {
    const RankProcess& rank = ranks[first_failed];
    write_all(sink_err, "dualpipe launch: failed: rank " + std::to_string(first_failed) + " " +
                            describe(rank.status) + "\n");
    return exit_code(rank.status) == 0 ? 1 : exit_code(rank.status);
  }
  if (interrupted_by != 0) return 128 + interrupted_by;
  return 0;
}

}  // namespace dualpipe::runtime

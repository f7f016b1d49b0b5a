#include "dualpipe/runtime/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>

#include "dualpipe/runtime/distributed_env.h"
#include "dualpipe/runtime/peers_waited_for.h"

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
  int rank = 0;  // global rank
  pid_t pid = -1;
  bool running = false;
  int status = 0;
  int stopped_by = 0;  // the signal that stopped it (SIGSTOP, ...) while it is stopped, else 0
  bool ended_before_stop = false;  // it ended before the launcher stopped the ranks
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

std::string master_address(const LaunchOptions& options) {
  return options.master_addr.empty() ? "127.0.0.1" : options.master_addr;
}

std::string failure_report_path(const std::string& dir, int rank) {
  return dir + "/error." + std::to_string(rank);
}

std::vector<std::string> make_environment(const LaunchOptions& options, int local_rank, int port) {
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const size_t eq = text.find('=');
    if (eq != std::string::npos) env[text.substr(0, eq)] = text.substr(eq + 1);
  }
  // NOTE: variables of an enclosing launcher would make the rank misdetect its world.
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID",
                           "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE",
                           "TORCHELASTIC_RESTART_COUNT", kStoreFileEnv, kErrorDirEnv}) {
    env.erase(name);
  }
  env["RANK"] = std::to_string(options.node_rank * options.num_ranks + local_rank);
  env["WORLD_SIZE"] = std::to_string(options.num_nodes * options.num_ranks);
  env["LOCAL_RANK"] = std::to_string(local_rank);
  env["LOCAL_WORLD_SIZE"] = std::to_string(options.num_ranks);
  env["GROUP_RANK"] = std::to_string(options.node_rank);
  env["MASTER_ADDR"] = master_address(options);
  env["MASTER_PORT"] = std::to_string(port);
  env["OMP_NUM_THREADS"] = "1";
  env[kLaunchedRankEnv] = "1";
  // NOTE: a DUALPIPE_TIMEOUT of the launcher's own environment reaches the ranks unless
  // options.timeout_s replaces it.
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

// Kills (SIGKILL) and reaps the ranks started so far.
void kill_started(std::vector<RankProcess>& ranks) {
  signal_all(ranks, SIGKILL);
  for (RankProcess& rank : ranks) {
    if (rank.running) ::waitpid(rank.pid, nullptr, 0);
  }
}

void check_launch_options(const LaunchOptions& options) {
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
  if (options.num_nodes < 1 || options.node_rank < 0 || options.node_rank >= options.num_nodes) {
    throw std::invalid_argument("dualpipe launch needs 0 <= node_rank < num_nodes, got node_rank=" +
                                std::to_string(options.node_rank) +
                                ", num_nodes=" + std::to_string(options.num_nodes));
  }
  if (options.num_nodes > 1 && (options.master_addr.empty() || options.master_port == 0)) {
    throw std::invalid_argument(
        "dualpipe launch on " + std::to_string(options.num_nodes) +
        " nodes needs --master-addr (the host of node 0) and --master-port, the same on every "
        "node; got master_addr=\"" +
        options.master_addr + "\", master_port=" + std::to_string(options.master_port));
  }
}

// The forked child of a rank: SIGKILL when the launcher dies, its own process group,
// stdout/stderr on the pipes, the signal mask the launcher started with, then the program. Only
// async-signal-safe calls until exec.
[[noreturn]] void exec_rank(pid_t launcher, int out_fd, int err_fd, const sigset_t& old_mask,
                            char** argv, char** envp) {
  // NOTE: PDEATHSIG survives exec. The launcher may have died between fork and prctl, and
  // then no signal comes: a different parent (the reaper) means it did.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != launcher) ::_exit(128 + SIGKILL);
  ::setpgid(0, 0);
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(err_fd, STDERR_FILENO);
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::execvpe(argv[0], argv, envp);
  const char* message = "dualpipe launch: cannot execute the program: ";
  (void)!::write(STDERR_FILENO, message, std::strlen(message));
  const char* reason = strerror(errno);
  (void)!::write(STDERR_FILENO, reason, std::strlen(reason));
  (void)!::write(STDERR_FILENO, "\n", 1);
  ::_exit(127);
}

// Starts rank `k` into ranks[k], its stdout and stderr on new pipes. Throws std::runtime_error
// when a pipe cannot be made, or when fork fails, after killing and reaping the ranks started.
void start_rank(const LaunchOptions& options, int k, int port, std::vector<char*>& argv,
                const SignalGuard& signals, std::vector<RankProcess>& ranks) {
  const pid_t launcher = ::getpid();
  std::vector<std::string> env_strings = make_environment(options, k, port);
  std::vector<char*> envp = pointers(env_strings);
  int out[2], err[2];
  const std::string which = " for rank " + std::to_string(ranks[k].rank);
  if (::pipe2(out, O_CLOEXEC) != 0) throw system_error("pipe" + which);
  if (::pipe2(err, O_CLOEXEC) != 0) {
    const auto error = system_error("pipe" + which);
    ::close(out[0]);
    ::close(out[1]);
    throw error;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const auto error = system_error("fork" + which);
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    throw error;
  }
  if (pid == 0) {
    exec_rank(launcher, out[1], err[1], signals.old_mask(), argv.data(), envp.data());
  }
  ::setpgid(pid, pid);  // Also here: whichever of parent and child runs first.
  ::close(out[1]);
  ::close(err[1]);
  ranks[k].pid = pid;
  ranks[k].running = true;
  ranks[k].out = Stream{out[0], options.stdout_fd, {}};
  ranks[k].err = Stream{err[0], options.stderr_fd, {}};
}

std::vector<RankProcess> start_ranks(const LaunchOptions& options, int port,
                                     const SignalGuard& signals) {
  std::vector<std::string> args = options.command;
  std::vector<char*> argv = pointers(args);
  std::vector<RankProcess> ranks(options.num_ranks);
  for (int k = 0; k < options.num_ranks; ++k)
    ranks[k].rank = options.node_rank * options.num_ranks + k;
  try {
    for (int k = 0; k < options.num_ranks; ++k) start_rank(options, k, port, argv, signals, ranks);
  } catch (...) {
    // NOTE: a job missing a rank would only wait for it until the timeout.
    kill_started(ranks);
    for (RankProcess& rank : ranks) {
      for (int fd : {rank.out.fd, rank.err.fd}) {
        if (fd >= 0) ::close(fd);
      }
    }
    throw;
  }
  return ranks;
}

// The ranks of one launch while they run, and how the launch is going.
struct Job {
  std::vector<RankProcess> ranks;
  int num_running = 0;
  int first_failed = -1;  // the first rank that failed before the ranks were told to stop
  int blamed = -1;        // a rank stopped by a signal when that happened: it stopped answering
  int blamed_signal = 0;  // ... and the signal that stopped it
  std::string cause;      // what the first failed rank reported (report_rank_failure)
  bool failed_while_running = false;  // ... before it ended (then the stop may have ended it)
  std::string error_dir;              // where ranks write their failure reports ("": nowhere)
  int interrupted_by = 0;             // the signal the launcher got and forwarded (0: none)
  bool stopping = false;              // the ranks were sent SIGTERM or the forwarded signal
  bool killed = false;                // ... and then SIGKILL, after the grace period
  Clock::time_point kill_at{};
  Clock::time_point all_ended_at{};
};

// Sends `sig` to every running rank; those alive after `grace` get SIGKILL.
void stop_ranks(Job& job, std::chrono::milliseconds grace, int sig) {
  job.stopping = true;
  job.kill_at = Clock::now() + grace;
  signal_all(job.ranks, sig);
}

// The index of a rank that is stopped by a signal now, or -1.
int stopped_rank(const Job& job) {
  for (size_t k = 0; k < job.ranks.size(); ++k) {
    if (job.ranks[k].running && job.ranks[k].stopped_by != 0) return static_cast<int>(k);
  }
  return -1;
}

// Says that rank `k` failed. The first failure before any stop stops the others; a rank that
// a stop ended with the signal it was sent goes unreported.
void on_rank_failed(Job& job, const LaunchOptions& options, int k) {
  const RankProcess& rank = job.ranks[k];
  const int status = rank.status;
  if (job.first_failed == k) return;  // said when the job was stopped for it
  if (!(job.stopping && WIFSIGNALED(status) &&
        (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGKILL ||
         WTERMSIG(status) == job.interrupted_by))) {
    write_all(options.stderr_fd,
              "dualpipe launch: rank " + std::to_string(rank.rank) + " " + describe(status) + "\n");
  }
}

// The failure report (report_rank_failure) of rank `k`: its time in ns and message, if any.
std::optional<std::pair<long long, std::string>> failure_report(const Job& job, int k) {
  if (job.error_dir.empty()) return std::nullopt;
  std::ifstream in(failure_report_path(job.error_dir, job.ranks[k].rank));
  long long time_ns = 0;
  std::string message;
  if (!(in >> time_ns)) return std::nullopt;
  in.get();
  std::getline(in, message);
  return std::make_pair(time_ns, message);
}

// Whether a failure report says the rank lost a peer (Gloo's and dualpipe's messages for a
// closed, reset or silent connection) rather than failing on its own.
bool lost_a_peer(const std::string& message) {
  for (const char* sign : {"by peer", "Connection reset", "Broken pipe", "timed out", "Timed out",
                           "the peer stopped"}) {
    if (message.find(sign) != std::string::npos) return true;
  }
  return false;
}

// Of the ranks that just failed (`failed`, in rank order) and any rank that reported a failure
// while still running, the root cause: a rank killed by a signal (it could not report, and its
// peers failed only once it was gone), else the earliest report of a rank that failed on its
// own, else the earliest report (torchrun's "first observed failure"), else the first in rank
// order. NOTE: a rank that throws unwinds, closing its connections, before its report is
// written, so a peer that saw them close may report first; its message says it lost a peer.
int root_cause(const Job& job, const std::vector<int>& failed) {
  for (int k : failed) {
    const int status = job.ranks[k].status;
    if (WIFSIGNALED(status) && !failure_report(job, k)) return k;
  }
  int earliest = -1;
  bool earliest_lost_a_peer = true;
  long long earliest_ns = 0;
  for (size_t k = 0; k < job.ranks.size(); ++k) {
    const auto report = failure_report(job, static_cast<int>(k));
    if (!report) continue;
    const bool lost = lost_a_peer(report->second);
    if (earliest < 0 || (earliest_lost_a_peer && !lost) ||
        (lost == earliest_lost_a_peer && report->first < earliest_ns)) {
      earliest = static_cast<int>(k);
      earliest_lost_a_peer = lost;
      earliest_ns = report->first;
    }
  }
  return earliest >= 0 ? earliest : failed.front();
}

// Stops the job for the ranks that just failed: names the root cause among them, and a rank
// stopped by a signal, if one is, as the one that stopped answering.
void on_first_failures(Job& job, const LaunchOptions& options, const std::vector<int>& failed) {
  const int k = root_cause(job, failed);
  const RankProcess& rank = job.ranks[k];
  job.first_failed = k;
  const auto report = failure_report(job, k);
  job.cause = report ? report->second : "";
  job.failed_while_running = rank.running;
  const std::string what = rank.running ? "failed" : describe(rank.status);
  write_all(options.stderr_fd, "dualpipe launch: rank " + std::to_string(rank.rank) + " (pid " +
                                   std::to_string(rank.pid) + ") " + what +
                                   (job.cause.empty() ? "" : ": " + job.cause) +
                                   "; stopping the other ranks\n");
  job.blamed = stopped_rank(job);
  if (job.blamed >= 0) job.blamed_signal = job.ranks[job.blamed].stopped_by;
  stop_ranks(job, options.grace_period, SIGTERM);
}

// A rank that a signal stopped (SIGSTOP, SIGTSTP) cannot answer its peers: they will time out
// and fail, bystanders, so the launcher says now who stopped.
void on_rank_stopped_or_continued(Job& job, const LaunchOptions& options, int k, int status) {
  RankProcess& rank = job.ranks[k];
  if (WIFCONTINUED(status)) {
    rank.stopped_by = 0;
    write_all(options.stderr_fd,
              "dualpipe launch: rank " + std::to_string(rank.rank) + " continued\n");
    return;
  }
  rank.stopped_by = WSTOPSIG(status);
  write_all(options.stderr_fd, "dualpipe launch: rank " + std::to_string(rank.rank) + " (pid " +
                                   std::to_string(rank.pid) + ") was stopped by signal " +
                                   std::to_string(rank.stopped_by) + " (" +
                                   strsignal(rank.stopped_by) +
                                   "); its peers wait for it until their timeout\n");
}

// Reaps the ranks that ended (also without SIGCHLD: another thread of this process may have
// taken it).
void reap_ended_ranks(Job& job, const LaunchOptions& options) {
  std::vector<int> newly_failed;
  for (int k = 0; k < options.num_ranks; ++k) {
    RankProcess& rank = job.ranks[k];
    if (!rank.running) continue;
    int status = 0;
    const pid_t done = ::waitpid(rank.pid, &status, WNOHANG | WUNTRACED | WCONTINUED);
    if (done != rank.pid) continue;
    if (WIFSTOPPED(status) || WIFCONTINUED(status)) {
      on_rank_stopped_or_continued(job, options, k, status);
      continue;
    }
    rank.running = false;
    rank.status = status;
    rank.ended_before_stop = !job.stopping;
    if (--job.num_running == 0) job.all_ended_at = Clock::now();
    if (failed(status)) newly_failed.push_back(k);
  }
  if (newly_failed.empty()) return;
  if (job.first_failed < 0 && !job.stopping) on_first_failures(job, options, newly_failed);
  for (int k : newly_failed) on_rank_failed(job, options, k);
}

// Every rank has ended and its pipes are at EOF, or kDrainTime passed since.
bool all_ended_and_drained(const Job& job) {
  bool open_pipes = false;
  for (const RankProcess& rank : job.ranks) open_pipes |= rank.out.fd >= 0 || rank.err.fd >= 0;
  return job.num_running == 0 && (!open_pipes || Clock::now() - job.all_ended_at > kDrainTime);
}

void kill_after_grace_period(Job& job, const LaunchOptions& options) {
  if (!job.stopping || job.killed || job.num_running == 0 || Clock::now() < job.kill_at) return;
  job.killed = true;
  write_all(options.stderr_fd, "dualpipe launch: " + std::to_string(job.num_running) +
                                   " rank(s) still running after the grace period; sending "
                                   "SIGKILL\n");
  signal_all(job.ranks, SIGKILL);
}

// Forwards the first SIGINT/SIGTERM the launcher got to the ranks (unless a rank already failed
// and the ranks are stopping for that); SIGCHLD only wakes the loop.
void forward_signals(Job& job, const LaunchOptions& options, int signal_fd) {
  signalfd_siginfo info;
  while (::read(signal_fd, &info, sizeof info) == sizeof info) {
    const int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) continue;
    if (job.interrupted_by == 0 && job.first_failed < 0) {
      job.interrupted_by = sig;
      write_all(options.stderr_fd, std::string("dualpipe launch: got ") + strsignal(sig) +
                                       ", forwarding it to the ranks\n");
      stop_ranks(job, options.interrupt_grace_period.value_or(options.grace_period), sig);
    }
  }
}

// Waits up to 100 ms for a signal or the ranks' output, then handles what came.
void wait_and_forward(Job& job, const LaunchOptions& options, const SignalGuard& signals) {
  std::vector<pollfd> fds;
  std::vector<std::pair<int, Stream*>> streams;
  fds.push_back({signals.fd(), POLLIN, 0});
  for (int k = 0; k < options.num_ranks; ++k) {
    for (Stream* stream : {&job.ranks[k].out, &job.ranks[k].err}) {
      if (stream->fd < 0) continue;
      fds.push_back({stream->fd, POLLIN, 0});
      streams.emplace_back(job.ranks[k].rank, stream);
    }
  }
  const int ready = ::poll(fds.data(), fds.size(), 100);
  if (ready < 0 && errno != EINTR) throw system_error("poll");
  if (ready <= 0) return;
  if (fds[0].revents & POLLIN) forward_signals(job, options, signals.fd());
  for (size_t i = 1; i < fds.size(); ++i) {
    if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
      drain(streams[i - 1].first, *streams[i - 1].second);
    }
  }
}

// Runs the job until every rank has ended and its output is forwarded.
void monitor(Job& job, const LaunchOptions& options, const SignalGuard& signals) {
  while (true) {
    reap_ended_ranks(job, options);
    if (all_ended_and_drained(job)) break;
    kill_after_grace_period(job, options);
    wait_and_forward(job, options, signals);
  }
  for (RankProcess& rank : job.ranks) {
    for (Stream* stream : {&rank.out, &rank.err}) {
      if (stream->fd >= 0) ::close(stream->fd);
    }
  }
}

// The index in job.ranks of global rank `rank`, or -1 when it is another node's.
int local_index(const Job& job, int rank) {
  for (size_t k = 0; k < job.ranks.size(); ++k) {
    if (job.ranks[k].rank == rank) return static_cast<int>(k);
  }
  return -1;
}

// Whether rank `k` failed on its own: it reported a failure that is not a lost peer, or it
// ended by a signal without a report before the launcher stopped the ranks.
bool failed_on_its_own(const Job& job, int k) {
  const RankProcess& rank = job.ranks[k];
  if (const auto report = failure_report(job, k)) return !lost_a_peer(report->second);
  return rank.ended_before_stop && failed(rank.status) && WIFSIGNALED(rank.status);
}

// Where a wait-for chain ends: the rank (or, after a collective, the ranks) that stopped
// answering; `local` is its index in job.ranks, -1 for ranks of other nodes.
struct ChainEnd {
  std::vector<int> ranks;
  int local = -1;
};

// Follows the wait-for chain from rank `k`, whose report says it lost a peer: the peers its
// report names (peers_waited_for), then their reports, while they are this node's ranks that
// lost a peer too. Ends at a rank of this node that failed on its own or is stopped, at the
// ranks of another node a report names, or nowhere (nullopt: the reports name no peer). A
// chain through a single named peer wins over the several members of a collective.
std::optional<ChainEnd> follow_wait_for(const Job& job, int k, std::set<int>& visited) {
  visited.insert(k);
  const auto report = failure_report(job, k);
  if (!report || !lost_a_peer(report->second)) return std::nullopt;
  const std::vector<int> peers = peers_waited_for(report->second);
  std::vector<int> remote;
  for (int peer : peers) {
    const int p = local_index(job, peer);
    if (p < 0) {
      remote.push_back(peer);
    } else if (p != k && (failed_on_its_own(job, p) || job.ranks[p].stopped_by != 0)) {
      return ChainEnd{{peer}, p};
    }
  }
  if (peers.size() == 1 && remote.size() == 1) return ChainEnd{remote, -1};
  std::optional<ChainEnd> several;
  for (int peer : peers) {
    const int p = local_index(job, peer);
    if (p < 0 || visited.count(p) != 0) continue;
    auto end = follow_wait_for(job, p, visited);
    if (end && end->ranks.size() == 1) return end;
    if (end && !several) several = end;
  }
  if (!remote.empty()) return ChainEnd{remote, -1};
  return several;
}

// "rank 2", "one of ranks 0, 1".
std::string name_ranks(const std::vector<int>& ranks) {
  if (ranks.size() == 1) return "rank " + std::to_string(ranks[0]);
  std::string text = "one of ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) text += (i > 0 ? ", " : "") + std::to_string(ranks[i]);
  return text;
}

// The launch's exit status (see launch_local); names the first failed rank.
int report_outcome(const Job& job, const LaunchOptions& options) {
  if (job.first_failed >= 0) {
    const RankProcess& rank = job.ranks[job.first_failed];
    const std::string first = "rank " + std::to_string(rank.rank) + " " +
                              (job.failed_while_running ? "failed" : describe(rank.status)) +
                              (job.cause.empty() ? "" : ": " + job.cause);
    if (job.blamed >= 0) {
      const RankProcess& culprit = job.ranks[job.blamed];
      write_all(options.stderr_fd, "dualpipe launch: failed: rank " + std::to_string(culprit.rank) +
                                       " stopped answering (stopped by signal " +
                                       std::to_string(job.blamed_signal) + ", " +
                                       strsignal(job.blamed_signal) +
                                       "); first to fail waiting for it: " + first + "\n");
    } else if (std::set<int> visited;
               const auto end = follow_wait_for(job, job.first_failed, visited)) {
      // The first rank here to fail lost a peer: blame where its wait-for chain ends.
      const std::string them = end->ranks.size() == 1 ? "it" : "them";
      if (end->local >= 0) {
        const RankProcess& culprit = job.ranks[end->local];
        const auto report = failure_report(job, end->local);
        const std::string what =
            culprit.stopped_by != 0
                ? "stopped answering (stopped by signal " + std::to_string(culprit.stopped_by) +
                      ", " + strsignal(culprit.stopped_by) + ")"
                : describe(culprit.status) + (report ? ": " + report->second : "");
        write_all(options.stderr_fd, "dualpipe launch: failed: rank " +
                                         std::to_string(culprit.rank) + " " + what +
                                         "; first to fail waiting for it: " + first + "\n");
      } else {
        write_all(options.stderr_fd, "dualpipe launch: failed: " + name_ranks(end->ranks) +
                                         " (on another node) stopped answering its peers; first "
                                         "to fail here waiting for " +
                                         them + ": " + first + "\n");
      }
    } else {
      write_all(options.stderr_fd, "dualpipe launch: failed: " + first + "\n");
    }
    if (job.failed_while_running) return 1;
    return exit_code(rank.status) == 0 ? 1 : exit_code(rank.status);
  }
  if (job.interrupted_by != 0) return 128 + job.interrupted_by;
  return 0;
}

}  // namespace

void report_rank_failure(const std::string& what) {
  const char* dir = std::getenv(kErrorDirEnv);
  const char* rank = std::getenv("RANK");
  if (dir == nullptr || rank == nullptr) return;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  try {
    std::ofstream out(failure_report_path(dir, std::atoi(rank)), std::ios::trunc);
    out << static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec << " "
        << what.substr(0, what.find('\n')) << "\n";
  } catch (...) {
    // NOTE: a report that cannot be written only costs the launcher its best guess.
  }
}

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

// A fresh directory only this user can enter (mkdtemp: mode 0700) holding the job's rendezvous
// file store; removed with everything in it when the job ends, however it ends.
class PrivateStoreDirectory {
 public:
  PrivateStoreDirectory() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/dualpipe-job-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw system_error("creating a private directory for the rendezvous store (" + pattern + ")");
    }
    path_ = pattern;
  }
  ~PrivateStoreDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  PrivateStoreDirectory(const PrivateStoreDirectory&) = delete;
  PrivateStoreDirectory& operator=(const PrivateStoreDirectory&) = delete;
  std::string store_file() const { return path_ + "/store"; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

int launch_local(const LaunchOptions& user_options) {
  check_launch_options(user_options);
  // NOTE: local ranks meet in a file store, not a TCPStore (which would listen on every
  // interface, unauthenticated): a local job opens no socket another host can reach.
  LaunchOptions options = user_options;
  // The private directory also holds the ranks' failure reports.
  const PrivateStoreDirectory private_directory;
  options.extra_env.emplace_back(kErrorDirEnv, private_directory.path());
  if (options.num_nodes == 1 && is_loopback_address(master_address(options))) {
    options.extra_env.emplace_back(kStoreFileEnv, private_directory.store_file());
  }
  const int port = options.master_port != 0 ? options.master_port : pick_free_port();
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  SignalGuard signals(mask);
  Job job;
  job.error_dir = private_directory.path();
  job.ranks = start_ranks(options, port, signals);
  job.num_running = options.num_ranks;
  monitor(job, options, signals);
  return report_outcome(job, options);
}

}  // namespace dualpipe::runtime

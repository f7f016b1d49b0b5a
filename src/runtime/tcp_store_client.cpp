#include "dualpipe/runtime/tcp_store_client.h"

#include <c10/util/Exception.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace dualpipe::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// PyTorch 2.x's c10d::detail::QueryType (TCPStoreBackend.hpp); values are part of the protocol.
enum class Query : uint8_t {
  kValidate = 0,
  kSet = 1,
  kCompareSet = 2,
  kGet = 3,
  kAdd = 4,
  kCheck = 5,
  kWait = 6,
  kGetNumKeys = 7,
  kDeleteKey = 8,
  kCancelWait = 12,
};
constexpr uint32_t kValidationMagic = 0x3C85F7CE;
constexpr uint8_t kCheckReady = 0;
constexpr uint8_t kStopWaiting = 0;
constexpr uint8_t kWaitCanceled = 1;
// How long to wait for the server's answer to a request that does not wait for keys.
constexpr std::chrono::milliseconds kReplyTimeout{60000};

// One connection attempt to each address of host:port; returns the socket or -1 (errno set).
int connect_once(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int error = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
  if (error != 0) {
    throw std::runtime_error("cannot resolve the store host " + host + ": " +
                             ::gai_strerror(error));
  }
  int fd = -1;
  for (addrinfo* address = found; address != nullptr; address = address->ai_next) {
    fd = ::socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, address->ai_addr, address->ai_addrlen) == 0) break;
    const int saved = errno;
    ::close(fd);
    fd = -1;
    errno = saved;
  }
  ::freeaddrinfo(found);
  return fd;
}

}  // namespace

TcpStoreClient::TcpStoreClient(const std::string& host, int port, std::chrono::milliseconds timeout)
    : c10d::Store(timeout), host_(host), port_(port) {
  const auto deadline = Clock::now() + timeout;
  while ((fd_ = connect_once(host, port)) < 0) {
    const int error = errno;
    if (Clock::now() >= deadline) {
      throw std::runtime_error("could not connect to the TCPStore at " + host + ":" +
                               std::to_string(port) + " within " + std::to_string(timeout.count()) +
                               " ms: " + std::strerror(error));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // NOTE: one write: a 2.x server that reads the VALIDATE byte without its magic number drops
  // the connection at the next request.
  append_query(static_cast<uint8_t>(Query::kValidate));
  append_bytes(&kValidationMagic, sizeof kValidationMagic);
  flush();
}

TcpStoreClient::~TcpStoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

void TcpStoreClient::lost(const std::string& doing) const {
  TORCH_CHECK(false, "TCPStore at ", host_, ":", port_, ": ", doing,
              " failed: ", std::strerror(errno));
}

void TcpStoreClient::append_bytes(const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  request_.insert(request_.end(), bytes, bytes + size);
}

void TcpStoreClient::append_query(uint8_t query) {
  append_bytes(&query, 1);
}

void TcpStoreClient::flush() {
  std::vector<char> request;
  request.swap(request_);
  const char* bytes = request.data();
  size_t size = request.size();
  while (size > 0) {
    const ssize_t n = ::send(fd_, bytes, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) lost("sending a request");
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void TcpStoreClient::recv_bytes(void* data, size_t size) {
  if (!request_.empty()) flush();
  char* bytes = static_cast<char*>(data);
  const auto deadline = Clock::now() + kReplyTimeout;
  while (size > 0) {
    pollfd p{fd_, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    const int ready = ::poll(&p, 1, static_cast<int>(std::max<long long>(left, 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      errno = ETIMEDOUT;
      lost("waiting for a reply");
    }
    const ssize_t n = ::recv(fd_, bytes, size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = ECONNRESET;
    if (n <= 0) lost("reading a reply");
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void TcpStoreClient::append_string(const std::string& text) {
  const uint64_t size = text.size();
  append_bytes(&size, sizeof size);
  append_bytes(text.data(), text.size());
}

void TcpStoreClient::append_vector(const std::vector<uint8_t>& bytes) {
  const uint64_t size = bytes.size();
  append_bytes(&size, sizeof size);
  append_bytes(bytes.data(), bytes.size());
}

std::vector<uint8_t> TcpStoreClient::recv_vector() {
  uint64_t size = 0;
  recv_bytes(&size, sizeof size);
  std::vector<uint8_t> bytes(size);
  recv_bytes(bytes.data(), bytes.size());
  return bytes;
}

void TcpStoreClient::append_keys(const std::vector<std::string>& keys) {
  const uint64_t count = keys.size();
  append_bytes(&count, sizeof count);
  for (const std::string& key : keys) append_string(key);
}

void TcpStoreClient::set(const std::string& key, const std::vector<uint8_t>& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  append_query(static_cast<uint8_t>(Query::kSet));
  append_string(key);
  append_vector(value);
  flush();
}

std::vector<uint8_t> TcpStoreClient::compareSet(const std::string& key,
                                                const std::vector<uint8_t>& expected,
                                                const std::vector<uint8_t>& desired) {
  std::lock_guard<std::mutex> lock(mutex_);
  append_query(static_cast<uint8_t>(Query::kCompareSet));
  append_string(key);
  append_vector(expected);
  append_vector(desired);
  return recv_vector();
}

std::vector<uint8_t> TcpStoreClient::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  wait_locked({key}, timeout_);
  append_query(static_cast<uint8_t>(Query::kGet));
  append_string(key);
  return recv_vector();
}

int64_t TcpStoreClient::add(const std::string& key, int64_t value) {
  std::lock_guard<std::mutex> lock(mutex_);
  append_query(static_cast<uint8_t>(Query::kAdd));
  append_string(key);
  append_bytes(&value, sizeof value);
  int64_t result = 0;
  recv_bytes(&result, sizeof result);
  return result;
}

bool TcpStoreClient::deleteKey(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  append_query(static_cast<uint8_t>(Query::kDeleteKey));
  append_string(key);
  int64_t deleted = 0;
  recv_bytes(&deleted, sizeof deleted);
  return deleted == 1;
}

bool TcpStoreClient::check(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mutex_);
  append_query(static_cast<uint8_t>(Query::kCheck));
  append_keys(keys);
  uint8_t reply = 0;
  recv_bytes(&reply, 1);
  return reply == kCheckReady;
}

int64_t TcpStoreClient::getNumKeys() {
  std::lock_guard<std::mutex> lock(mutex_);
  append_query(static_cast<uint8_t>(Query::kGetNumKeys));
  int64_t count = 0;
  recv_bytes(&count, sizeof count);
  return count;
}

void TcpStoreClient::wait(const std::vector<std::string>& keys) {
  wait(keys, timeout_);
}

void TcpStoreClient::wait(const std::vector<std::string>& keys,
                          const std::chrono::milliseconds& timeout) {
  std::lock_guard<std::mutex> lock(mutex_);
  wait_locked(keys, timeout);
}

// NOTE: the server answers a WAIT only when every key exists; on our timeout we cancel it, and
// the answer that then comes may still be STOP_WAITING (the keys appeared meanwhile) before
// WAIT_CANCELED, as c10d's own client handles it.
void TcpStoreClient::wait_locked(const std::vector<std::string>& keys,
                                 std::chrono::milliseconds timeout) {
  append_query(static_cast<uint8_t>(Query::kWait));
  append_keys(keys);
  flush();
  pollfd p{fd_, POLLIN, 0};
  const auto deadline = Clock::now() + timeout;
  int ready = 0;
  do {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    ready = ::poll(&p, 1, static_cast<int>(std::max<long long>(left, 0)));
  } while (ready < 0 && errno == EINTR);
  if (ready > 0) {
    uint8_t reply = 0;
    recv_bytes(&reply, 1);
    TORCH_CHECK(reply == kStopWaiting, "TCPStore at ", host_, ":", port_,
                ": unexpected reply to WAIT: ", static_cast<int>(reply));
    return;
  }
  append_query(static_cast<uint8_t>(Query::kCancelWait));
  uint8_t reply = 0;
  recv_bytes(&reply, 1);
  const bool arrived = reply == kStopWaiting;
  if (arrived) recv_bytes(&reply, 1);
  TORCH_CHECK(reply == kWaitCanceled, "TCPStore at ", host_, ":", port_,
              ": unexpected reply to CANCEL_WAIT: ", static_cast<int>(reply));
  if (arrived) return;
  std::string names;
  for (const std::string& key : keys) names += (names.empty() ? "" : ", ") + key;
  TORCH_CHECK(false, "TCPStore at ", host_, ":", port_, ": waiting for key(s) ", names,
              " timed out after ", timeout.count(), " ms");
}

}  // namespace dualpipe::runtime

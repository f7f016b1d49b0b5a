#pragma once
// A client of a c10d TCPStore server that speaks PyTorch 2.x's wire protocol: the store that
// torchrun's agent serves on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True).
//
// NOTE: why not c10d::TCPStore as a client? The agent is whatever PyTorch runs torchrun, not the
// LibTorch dualpipe links: LibTorch 1.13's client speaks an older protocol (no VALIDATE
// handshake, other query numbers), which a 2.x server silently ignores, so the ranks would hang.
// The 2.x protocol (VALIDATE first, then SET/GET/ADD/CHECK/WAIT/... with little-endian uint64
// lengths) is served by both the libuv and the classic server of every 2.x release, so this one
// client works whichever LibTorch dualpipe is built with.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

namespace dualpipe::runtime {

class TcpStoreClient : public c10d::Store {
 public:
  // Connects to host:port, retrying refused connections until `timeout`, and validates.
  // Blocking. Throws std::runtime_error naming host, port and the last error after `timeout`.
  TcpStoreClient(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~TcpStoreClient() override;
  TcpStoreClient(const TcpStoreClient&) = delete;
  TcpStoreClient& operator=(const TcpStoreClient&) = delete;

  // The c10d::Store operations. Thread-safe (one request at a time on the one connection).
  // get() waits up to getTimeout() for the key; wait() throws c10::Error naming the keys after
  // the timeout; a lost connection throws c10::Error naming the server.
  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                  const std::vector<uint8_t>& desired) override;
  std::vector<uint8_t> get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  // A request is appended whole, then sent in one write (flush; recv_bytes flushes first).
  void append_query(uint8_t query);
  void append_bytes(const void* data, size_t size);
  void append_string(const std::string& text);
  void append_vector(const std::vector<uint8_t>& bytes);
  void append_keys(const std::vector<std::string>& keys);
  void flush();
  void recv_bytes(void* data, size_t size);
  std::vector<uint8_t> recv_vector();
  void wait_locked(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  [[noreturn]] void lost(const std::string& doing) const;

  std::string host_;
  int port_;
  int fd_ = -1;
  std::vector<char> request_;
  std::mutex mutex_;
};

}  // namespace dualpipe::runtime

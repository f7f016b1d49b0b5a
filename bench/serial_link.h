#pragma once
// Benchmark-only emulation of a network link for the MoE benchmarks: on a 2-core machine loopback
// all-to-alls are nearly free and compete with compute for the CPU, so each token all-to-all
// instead takes a fixed time on a link that carries one all-to-all at a time, waited out with a
// sleep (which costs no CPU).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "dualpipe/moe/comm_stream.h"
#include "dualpipe/runtime/trace.h"

namespace dualpipe::bench {

// An all-to-all posted at t is delivered at max(t, when the link frees) + per_all_to_all.
// NOTE: not thread-safe; the benchmarks post a stream's all-to-alls from one thread.
class SerialLink final : public moe::LinkModel {
 public:
  explicit SerialLink(std::chrono::microseconds per_all_to_all)
      : per_all_to_all_us_(per_all_to_all.count()) {}

  std::int64_t delivery_us(std::int64_t post_us) override {
    link_free_us_ = std::max(link_free_us_, post_us) + per_all_to_all_us_;
    return link_free_us_;
  }

  void wait_until(std::int64_t delivery_us) override {
    std::this_thread::sleep_for(std::chrono::microseconds(delivery_us - runtime::Trace::now_us()));
  }

 private:
  std::int64_t per_all_to_all_us_;
  std::int64_t link_free_us_ = 0;
};

// A fresh link for one CommStream (streams must not share one: each has its own link), or null
// (no emulation) when per_all_to_all is zero.
inline std::shared_ptr<moe::LinkModel> serial_link(std::chrono::microseconds per_all_to_all) {
  if (per_all_to_all.count() <= 0) return nullptr;
  return std::make_shared<SerialLink>(per_all_to_all);
}

}  // namespace dualpipe::bench

// CommStream with a LinkModel: asked once per token all-to-all as it is posted, waited on only
// when the collective completes before the modelled delivery, never for token counts.

#include "dualpipe/moe/comm_stream.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace dualpipe::moe {
namespace {

// A link that delivers each all-to-all `latency_us` after its post and records what CommStream
// asked; wait_until() returns at once.
class RecordingLink : public LinkModel {
 public:
  explicit RecordingLink(std::int64_t latency_us) : latency_us_(latency_us) {}
  std::int64_t delivery_us(std::int64_t post_us) override {
    posts.push_back(post_us);
    return post_us + latency_us_;
  }
  void wait_until(std::int64_t delivery_us) override { waits.push_back(delivery_us); }

  std::vector<std::int64_t> posts;
  std::vector<std::int64_t> waits;

 private:
  std::int64_t latency_us_;
};

// A one-rank stream (no communicator): its all-to-alls are identities.
TEST(CommStreamTest, LinkModelSetsWhenAnAllToAllIsDelivered) {
  constexpr std::int64_t kHourUs = 3600LL * 1000 * 1000;
  auto link = std::make_shared<RecordingLink>(kHourUs);
  CommStreamOptions options;
  options.link = link;
  options.trace = true;
  CommStream stream(runtime::CommunicatorPtr(), options);
  const at::Tensor rows = at::arange(6, at::kFloat).reshape({3, 2});

  const std::int64_t before_us = runtime::Trace::now_us();
  PendingAllToAll pending = stream.all_to_all(rows, {3}, {3}, "dispatch");
  const std::int64_t after_us = runtime::Trace::now_us();
  ASSERT_EQ(link->posts.size(), 1u) << "asked once, when posted";
  EXPECT_GE(link->posts[0], before_us);
  EXPECT_LE(link->posts[0], after_us);
  EXPECT_TRUE(link->waits.empty()) << "posting does not wait";

  EXPECT_TRUE(at::equal(pending.wait(), rows));
  ASSERT_EQ(link->waits.size(), 1u) << "the identity completed before the modelled delivery";
  EXPECT_EQ(link->waits[0], link->posts[0] + kHourUs);
  const std::vector<runtime::TraceEvent> events = stream.trace_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].name, "dispatch");
  EXPECT_EQ(events[0].start_us + events[0].duration_us, link->waits[0])
      << "the trace ends the all-to-all at its delivery";

  EXPECT_EQ(stream.exchange_counts({4, 5}), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(link->posts.size(), 1u) << "token counts are not modelled";
}

TEST(CommStreamTest, LinkModelDeliveringBeforeCompletionIsNotWaitedFor) {
  auto link = std::make_shared<RecordingLink>(-1000);
  CommStreamOptions options;
  options.link = link;
  CommStream stream(runtime::CommunicatorPtr(), options);
  const at::Tensor rows = at::ones({2, 2});
  EXPECT_TRUE(at::equal(stream.all_to_all(rows, {2}, {2}, "combine").wait(), rows));
  EXPECT_EQ(link->posts.size(), 1u);
  EXPECT_TRUE(link->waits.empty());
}

}  // namespace
}  // namespace dualpipe::moe

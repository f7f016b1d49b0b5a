#include "dualpipe/train/training_data.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/train/corpus.h"

namespace dualpipe::train {
namespace {

// windows[i][t] = 100 * i + t, so a row says which window it came from.
at::Tensor numbered_windows(int64_t count, int64_t seq_len) {
  return (at::arange(count, at::kLong).view({count, 1}) * 100 +
          at::arange(seq_len + 1, at::kLong).view({1, seq_len + 1}))
      .contiguous();
}

TEST(RankBatch, DualPipeFeedsHalvesFromBothEndsAndCrossesLabels) {
  const schedule::Schedule s = schedule::build_schedule("dualpipe", 4, 8);
  const at::Tensor w = numbered_windows(16, 5);  // 8 micro-batches of 2 rows
  const RankBatch r0 = rank_batch(s, 0, w);
  const RankBatch r3 = rank_batch(s, 3, w);
  const RankBatch r1 = rank_batch(s, 1, w);
  // Rank 0: direction 0's inputs (first half), direction 1's labels (second half).
  ASSERT_EQ(r0.inputs.sizes(), (at::IntArrayRef{8, 5}));
  EXPECT_EQ(r0.inputs[0][0].item<int64_t>(), 0);
  EXPECT_EQ(r0.labels[0][0].item<int64_t>(), 801);
  EXPECT_EQ(r0.loss_microbatches, (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(r3.inputs[0][0].item<int64_t>(), 800);
  EXPECT_EQ(r3.labels[0][0].item<int64_t>(), 1);
  EXPECT_EQ(r3.loss_microbatches, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_FALSE(r1.inputs.defined());
  EXPECT_FALSE(r1.labels.defined());
}

TEST(RankBatch, OneDirectionSchedulesFeedRankZeroAndLabelTheLastStage) {
  for (const char* name : {"1f1b", "gpipe", "zb1p"}) {
    const schedule::Schedule s = schedule::build_schedule(name, 3, 6);
    const at::Tensor w = numbered_windows(6, 4);
    EXPECT_TRUE(at::equal(rank_batch(s, 0, w).inputs, w.narrow(1, 0, 4))) << name;
    EXPECT_TRUE(at::equal(rank_batch(s, 2, w).labels, w.narrow(1, 1, 4))) << name;
    EXPECT_EQ(rank_batch(s, 2, w).loss_microbatches.size(), 6u) << name;
  }
  const schedule::Schedule v = schedule::build_schedule("dualpipev", 2, 4);
  const RankBatch r0 = rank_batch(v, 0, numbered_windows(4, 3));
  EXPECT_TRUE(r0.inputs.defined());
  EXPECT_TRUE(r0.labels.defined());
}

TEST(TrainingData, FortunesSplitAndEvalWindows) {
  TrainConfig c;
  c.seq_len = 16;
  c.eval_windows = 10;
  c.num_microbatches = 4;
  EXPECT_EQ(eval_microbatch_size(c), 3);
  // The one documented reason to skip (as in corpus_test.cpp): the default corpus is the fortunes
  // package's files. Any other error fails the test.
  if (!std::filesystem::exists(kDefaultCorpusPath))
    GTEST_SKIP() << "fortunes package not installed";
  const TrainingData d = load_training_data(c);
  EXPECT_EQ(d.held_out.size(0), 12);
  EXPECT_GT(d.split.train.size(), 8 * d.split.held_out.size());
  EXPECT_GT(d.unigram_loss, 2.5);
  EXPECT_LT(d.unigram_loss, 4.5);
}

}  // namespace
}  // namespace dualpipe::train

#include "dualpipe/train/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "dualpipe/train/loss_curve.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

TEST(Metrics, WritesCsvAndJsonLinesAndTruncatesOnResume) {
  const fs::path dir =
      fs::temp_directory_path() / ("dualpipe_metrics_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    MetricsWriter w(dir.string(), 0);
    for (int s = 1; s <= 5; ++s)
      w.write({s, 5.0 - s, s == 3 ? std::optional<double>(2.5) : std::nullopt, 100.0, 0.1});
  }
  auto rows = read_metrics(dir.string());
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(*rows[2].held_out_loss, 2.5);
  EXPECT_FALSE(rows[1].held_out_loss);
  {
    MetricsWriter w(dir.string(), 3);  // a run resumed from step 3's checkpoint
    w.write({4, 0.5, std::nullopt, 1.0, 1.0});
  }
  rows = read_metrics(dir.string());
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[3].loss, 0.5);
  std::ifstream csv(dir / "metrics.csv");
  std::string header, first;
  std::getline(csv, header);
  std::getline(csv, first);
  EXPECT_EQ(header, "step,loss,held_out_loss,tokens_per_second,step_seconds");
  EXPECT_EQ(first, "1,4,,100,0.1");
  fs::remove_all(dir);
}

TEST(Metrics, FormatsProgressAndDurations) {
  EXPECT_EQ(format_duration(12.34), "12.3s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  const std::string line = format_progress({40, 2.34567, 2.5, 1234.4, 0.523}, 300, 135);
  EXPECT_EQ(line, "step  40/300  loss 2.3457  held-out 2.5000  1234 tok/s  0.52 s/step  ETA 2m15s");
}

TEST(LossCurve, TicksAreRoundAndInside) {
  EXPECT_EQ(nice_ticks(0, 300, 6), (std::vector<double>{0, 50, 100, 150, 200, 250, 300}));
  const auto t = nice_ticks(1.3, 5.6, 5);
  ASSERT_FALSE(t.empty());
  EXPECT_GE(t.front(), 1.3);
  EXPECT_LE(t.back(), 5.6);
  EXPECT_EQ(nice_ticks(2, 2), std::vector<double>{2});
}

TEST(LossCurve, SvgHasBothCurvesAndBaseline) {
  const std::string svg = loss_curve_svg({{1, 5.5}, {2, 4.0}, {3, 3.0}}, {{3, 3.2}}, 4.4, "a <b>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 10, true);
  EXPECT_NE(svg.find("unigram 4.4"), std::string::npos);
  EXPECT_NE(svg.find("a &lt;b&gt;"), std::string::npos);
  EXPECT_NE(svg.find("<circle"), std::string::npos);
  EXPECT_NO_THROW(loss_curve_svg({}, {}, 0, ""));
}

}  // namespace
}  // namespace dualpipe::train

#include "dualpipe/train/corpus.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

fs::path make_temp_dir(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("dualpipe_corpus_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(Corpus, StripsFortuneSeparators) {
  EXPECT_EQ(strip_fortune_separators("one\n%\ntwo\nlines\n%\nthree"), "one\ntwo\nlines\nthree\n");
  EXPECT_EQ(strip_fortune_separators("a\r\n%\r\nb 100%\n"), "a\nb 100%\n");
  EXPECT_EQ(strip_fortune_separators(""), "");
}

TEST(Corpus, ReadsFolderSkippingIndexesInNameOrder) {
  const fs::path dir = make_temp_dir("folder");
  write(dir / "b", "second\n%\n");
  write(dir / "a", "first\n%\n");
  write(dir / "a.dat", "BINARY INDEX");
  write(dir / ".hidden", "hidden");
  fs::create_symlink(dir / "a", dir / "a.u8");
  const Corpus corpus = load_corpus(dir.string(), 1);
  EXPECT_EQ(std::string(corpus.bytes.begin(), corpus.bytes.end()), "first\nsecond\n");
  ASSERT_EQ(corpus.files.size(), 2u);
  fs::remove_all(dir);
}

TEST(Corpus, RejectsMissingAndTinyInputs) {
  EXPECT_THROW(load_corpus("/nonexistent/dualpipe/corpus"), std::invalid_argument);
  const fs::path dir = make_temp_dir("tiny");
  write(dir / "t", "tiny");
  EXPECT_THROW(load_corpus((dir / "t").string(), 100), std::invalid_argument);
  fs::remove_all(dir);
}

TEST(Corpus, FortunesArePresentAndEnglish) {
  if (!fs::exists(kDefaultCorpusPath)) GTEST_SKIP() << "fortunes package not installed";
  const Corpus corpus = load_corpus(kDefaultCorpusPath);
  EXPECT_GT(corpus.bytes.size(), 500000u);
  const std::string text(corpus.bytes.begin(), corpus.bytes.end());
  EXPECT_EQ(text.find("\n%\n"), std::string::npos);
  EXPECT_NE(text.find(" the "), std::string::npos);
}

TEST(Corpus, SplitIsDeterministicAndDisjointByBlocks) {
  std::vector<std::uint8_t> bytes(1000);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i / 10);
  const CorpusSplit split = split_corpus(bytes, 10, 4);
  // Blocks 3, 7, 11, ... are held out: 25 of 100 blocks.
  EXPECT_EQ(split.held_out.size(), 250u);
  EXPECT_EQ(split.train.size(), 750u);
  EXPECT_EQ(split.held_out[0], 3);
  EXPECT_EQ(split.held_out[10], 7);
  EXPECT_EQ(split.train[30], 4);
  const CorpusSplit again = split_corpus(bytes, 10, 4);
  EXPECT_EQ(again.train, split.train);
  EXPECT_THROW(split_corpus(bytes, 10, 1), std::invalid_argument);
  EXPECT_THROW(split_corpus(bytes, 600, 2), std::invalid_argument);
}

TEST(Corpus, UnigramLossIsEntropy) {
  EXPECT_DOUBLE_EQ(unigram_loss({7, 7, 7}), 0.0);
  EXPECT_NEAR(unigram_loss({1, 2, 1, 2}), std::log(2.0), 1e-12);
  EXPECT_NEAR(unigram_loss({0, 1, 2, 3}), std::log(4.0), 1e-12);
  EXPECT_THROW(unigram_loss({}), std::invalid_argument);
}

// Before: `--data /dev/zero` read forever.
TEST(Corpus, DevicesAreRefusedInsteadOfReadForever) {
  try {
    load_corpus("/dev/zero", 1);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/zero is not a regular file"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dualpipe::train

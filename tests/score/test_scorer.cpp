// Linear toxicity scorer: tokens, features, a planted data set, save/load, file errors,
// metrics, data loaders.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "destein/score/linear_scorer.hpp"
#include "score/scorer_eval.hpp"
#include "train/scorer_data.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path tmp_dir() {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "scorer_tmp";
  fs::create_directories(dir);
  return dir;
}

fs::path data_dir() {
  if (const char* env = std::getenv("DESTEIN_DATA")) return env;
  return DESTEIN_DEFAULT_DATA_DIR;
}

// A tiny planted set: random sentences of filler words; toxic ones carry one of the
// planted words somewhere, clean ones never do.
std::vector<destein::LabeledText> planted(int n, uint64_t seed) {
  const std::vector<std::string> filler = {"the",   "a",     "house", "river",  "green",  "walks",
                                           "today", "with",  "their", "slowly", "bright", "we",
                                           "old",   "paper", "under", "seven",  "market", "sing"};
  const std::vector<std::string> planted_words = {"zorblax", "quibbet", "vrunk"};
  std::mt19937_64 rng(seed);
  std::vector<destein::LabeledText> out;
  for (int i = 0; i < n; ++i) {
    const int label = i % 2;
    const int len = 4 + static_cast<int>(rng() % 8);
    std::vector<std::string> words;
    for (int k = 0; k < len; ++k) words.push_back(filler[rng() % filler.size()]);
    if (label) words[rng() % words.size()] = planted_words[rng() % planted_words.size()];
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    out.push_back({text, label, "planted"});
  }
  return out;
}

destein::LinearFeatureOptions small_features() {
  destein::LinearFeatureOptions f;
  f.hash_bits = 14;
  return f;
}

const destein::LinearScorer& planted_scorer() {
  static const destein::LinearScorer scorer = [] {
    destein::LinearTrainOptions t;
    t.l2 = 1e-4;
    t.max_iterations = 200;
    return destein::LinearScorer::train(planted(600, 1), small_features(), t);
  }();
  return scorer;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST_CASE("scorer: tokens are normalised", "[scorer]") {
  using V = std::vector<std::string>;
  CHECK(destein::scoring_tokens("Don't be a F*CK1NG id10t!!!") ==
        V{"dont", "be", "a", "f*cking", "idiot"});
  CHECK(destein::scoring_tokens("@Bob see https://x.y/z?q=1 NOW, 2019") ==
        V{"@user", "see", "url", "now", "0"});
  CHECK(destein::scoring_tokens("sh!t a$$ f@ck sooooo cooool") ==
        V{"shit", "ass", "fack", "soo", "cool"});
  CHECK(destein::scoring_tokens("dumb-ass\xE2\x80\x94you\xE2\x80\x99re caf\xC3\xA9") ==
        V{"dumb", "ass", "youre", "caf\xC3\xA9"});
  CHECK(destein::scoring_tokens("lol\xF0\x9F\x98\x82 &amp; it&#39;s DIGIT *** $") ==
        V{"lol", "\xF0\x9F\x98\x82", "its", "0"});
  CHECK(destein::scoring_tokens("").empty());
}

TEST_CASE("scorer: features are L2-normalised, deterministic, and count n-grams", "[scorer]") {
  destein::LinearFeatureOptions o;
  o.hash_bits = 20;
  destein::SparseFeatures a, b;
  destein::extract_features("You are an idiot", o, a);
  destein::extract_features("you are an IDIOT!", o, b);
  CHECK(a.index == b.index);
  CHECK(a.value == b.value);
  // 4 words: 4 unigrams + 3 bigrams; char n-grams of "<you>", "<are>", "<an>", "<idiot>".
  auto char_ngrams = [](int len) {
    int n = 0;
    for (int k = 2; k <= 5; ++k) n += std::max(0, len - k + 1);
    return n;
  };
  const size_t expected = 4 + 3 + char_ngrams(5) + char_ngrams(5) + char_ngrams(4) + char_ngrams(7);
  // Distinct n-grams ("<a", "ar"...) may coincide; there are no more than this.
  CHECK(a.index.size() <= expected);
  CHECK(a.index.size() >= expected - 4);
  double sum_sq = 0;
  for (float v : a.value) sum_sq += double(v) * v;
  CHECK(sum_sq == Approx(1.0).epsilon(1e-6));
  for (uint32_t i : a.index) CHECK(i < (1u << 20));
  destein::extract_features("", o, a);
  CHECK(a.index.empty());
  o.value = "tf";
  CHECK_THROWS_WITH(destein::extract_features("x", o, a), Contains("features.value"));
}

TEST_CASE("scorer: a tiny planted data set is separated", "[scorer]") {
  const auto& scorer = planted_scorer();
  auto test = planted(400, 99);  // fresh sentences, same rule
  std::vector<double> p;
  std::vector<int> y;
  for (const auto& t : test) {
    p.push_back(scorer.probability(t.text));
    y.push_back(t.label);
  }
  CHECK(destein::roc_auc(p, y) == 1.0);
  CHECK(destein::accuracy_at(p, y, 0.5) >= 0.98);
  CHECK(scorer.probability("the old market sings with a zorblax") > 0.8);
  CHECK(scorer.probability("the old market sings with a river") < 0.2);
  for (double v : p) CHECK((v > 0.0 && v < 1.0));
}

TEST_CASE("scorer: save and load give identical scores", "[scorer]") {
  const auto& scorer = planted_scorer();
  auto path = tmp_dir() / "planted.safetensors";
  scorer.save(path);
  CHECK(scorer.name() == "linear:" + path.string());
  auto loaded = destein::LinearScorer::load(path);
  CHECK(loaded.name() == "linear:" + path.string());
  CHECK(loaded.calibration_a() == scorer.calibration_a());
  CHECK(loaded.calibration_b() == scorer.calibration_b());
  CHECK(loaded.feature_options().hash_bits == 14);
  CHECK(loaded.self_test().size() == scorer.self_test().size());
  CHECK(loaded.provenance() == scorer.provenance());
  size_t mismatches = 0;
  for (const auto& t : planted(300, 7)) {
    const double a = scorer.probability(t.text), b = loaded.probability(t.text);
    if (a != b && mismatches++ == 0)
      FAIL_CHECK("first mismatch on '" << t.text << "': " << a << " vs " << b);
  }
  CHECK(mismatches == 0);
  std::vector<std::string> texts = {"a zorblax", "", "walks"};
  auto s = loaded.score(texts);
  REQUIRE(s.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    REQUIRE(s[i].has_value());
    CHECK(*s[i] == scorer.probability(texts[i]));
  }
}

TEST_CASE("scorer: a corrupt, truncated or foreign file gives a clear error", "[scorer]") {
  const auto& scorer = planted_scorer();
  auto good = tmp_dir() / "good.safetensors";
  scorer.save(good);
  const std::string bytes = read_bytes(good);
  auto bad = tmp_dir() / "bad.safetensors";

  CHECK_THROWS_WITH(destein::LinearScorer::load(tmp_dir() / "missing.safetensors"),
                    Contains("missing.safetensors") && Contains("not found"));

  write_bytes(bad, bytes.substr(0, bytes.size() - 100));
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad),
                    Contains("bad.safetensors") && Contains("truncated"));

  write_bytes(bad, bytes.substr(0, 5));
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad), Contains("too short"));

  std::string flipped = bytes;
  flipped[flipped.size() - 1000] ^= 0x40;  // inside the weights
  write_bytes(bad, flipped);
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad), Contains("checksum"));

  write_bytes(bad, "{\"not\": \"a model\"}\n");
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad), Contains("not a scorer file"));

  std::string other = bytes;  // a safetensors file of another kind
  const auto at = other.find("destein.linear_scorer");
  REQUIRE(at != std::string::npos);
  other.replace(at, 21, "someone.else_s_format");
  write_bytes(bad, other);
  CHECK_THROWS_WITH(
      destein::LinearScorer::load(bad),
      Contains("expected format 'destein.linear_scorer'") && Contains("someone.else_s_format"));

  // A tensor entry that is not valid safetensors is refused by the shared header checks
  // (io/safetensors_header), before anything scorer-specific.
  std::string dtype = bytes;
  const auto f16 = dtype.find("\"dtype\":\"F16\"");
  REQUIRE(f16 != std::string::npos);
  dtype.replace(f16 + 9, 3, "Q16");
  write_bytes(bad, dtype);
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad), Contains("bad.safetensors") &&
                                                          Contains("tensor 'weight'") &&
                                                          Contains("unsupported dtype 'Q16'"));
  dtype.replace(f16 + 9, 3, "I16");  // valid safetensors, but not what a scorer holds
  write_bytes(bad, dtype);
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad),
                    Contains("tensor 'weight'") && Contains("expected dtype F16, found I16"));

  std::string newer = bytes;
  const auto v = newer.find("\"format_version\":\"1\"");
  REQUIRE(v != std::string::npos);
  newer[v + 18] = '7';
  write_bytes(bad, newer);
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad), Contains("format_version"));

  // A self-test score that no longer matches (same length, so the header stays valid).
  std::string drift = bytes;
  const auto st = drift.find("\\\"toxicity\\\":0.");
  REQUIRE(st != std::string::npos);
  char& digit = drift[st + 16];
  digit = digit == '9' ? '1' : static_cast<char>(digit + 1);
  write_bytes(bad, drift);
  CHECK_THROWS_WITH(destein::LinearScorer::load(bad), Contains("self-test failed"));
}

TEST_CASE("scorer: training refuses bad input", "[scorer]") {
  std::vector<destein::LabeledText> one_class = {
      {"a", 1, "x"}, {"b", 1, "x"}, {"c", 1, "x"}, {"d", 1, "x"}, {"e", 1, "x"}};
  CHECK_THROWS_WITH(destein::LinearScorer::train(one_class, small_features(), {}),
                    Contains("labelled 0"));
  auto data = planted(20, 3);
  data[4].label = 2;
  CHECK_THROWS_WITH(destein::LinearScorer::train(data, small_features(), {}),
                    Contains("label 0 or 1, found 2"));
  destein::LinearTrainOptions t;
  t.calibration_fraction = 0.7;
  CHECK_THROWS_AS(destein::LinearScorer::train(planted(20, 3), small_features(), t),
                  std::invalid_argument);
  auto f = small_features();
  f.hash_bits = 30;
  CHECK_THROWS_WITH(destein::LinearScorer::train(planted(20, 3), f, {}), Contains("hash_bits"));
}

TEST_CASE("scorer: metrics against naive references", "[scorer]") {
  // AUC: the fraction of (positive, negative) pairs ordered right, ties one half.
  std::mt19937_64 rng(5);
  std::vector<double> s;
  std::vector<int> y;
  for (int i = 0; i < 200; ++i) {
    s.push_back(static_cast<double>(rng() % 20));  // many ties
    y.push_back(static_cast<int>(rng() % 3 == 0));
  }
  double good = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    for (size_t j = 0; j < s.size(); ++j) {
      if (y[i] == 1 && y[j] == 0) {
        pairs += 1;
        good += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
      }
    }
  }
  CHECK(destein::roc_auc(s, y) == Approx(good / pairs).epsilon(1e-12));
  CHECK(destein::roc_auc({0.1, 0.9}, {0, 1}) == 1.0);
  CHECK(destein::roc_auc({0.9, 0.1}, {0, 1}) == 0.0);
  CHECK_THROWS_WITH(destein::roc_auc({0.1, 0.2}, {1, 1}), Contains("both classes"));
  CHECK_THROWS_AS(destein::roc_auc({0.1}, {1, 0}), std::invalid_argument);

  CHECK(destein::accuracy_at({0.2, 0.5, 0.7, 0.4}, {0, 1, 0, 0}, 0.5) == 0.75);
  // Pearson of (1,2,3,4) and (2,4,5,9): hand-computed 0.9569... = 8.5 / sqrt(5 * 15.9375)...
  const double r = destein::pearson({1, 2, 3, 4}, {2, 4, 5, 9});
  // means 2.5 and 5; sxy = 1.5*3 + .5*1 + .5*0 + 1.5*4 = 11; sxx = 5; syy = 9+1+0+16 = 26
  CHECK(r == Approx(11.0 / std::sqrt(5.0 * 26.0)).epsilon(1e-12));
  CHECK_THROWS_WITH(destein::pearson({1, 1, 1}, {1, 2, 3}), Contains("constant"));
}

TEST_CASE("scorer: labelled sets load with the README's rules and counts", "[scorer][data]") {
  const fs::path dir = data_dir();
  if (!fs::is_directory(dir / "classifier")) {
    WARN("data not found, skipped: " << dir);
    return;
  }
  auto count = [](const std::vector<destein::LabeledText>& v, int label) {
    return std::count_if(v.begin(), v.end(), [&](const auto& t) { return t.label == label; });
  };
  auto spans = destein::load_labeled_set(dir, "toxic_spans");
  CHECK(count(spans, 1) == 11275);  // README: mostly toxic
  CHECK(count(spans, 0) == 4796);   // README: mostly not toxic (29 ties left out)
  auto para = destein::load_labeled_set(dir, "paradetox");
  CHECK(count(para, 1) == 11927);
  CHECK(count(para, 0) == 19743);
  auto cannot = destein::load_labeled_set(dir, "paradetox_cannot_rewrite");
  for (const auto& t : cannot) REQUIRE(t.text.front() != '"');
  auto olid = destein::load_labeled_set(dir, "olid");
  CHECK(olid.size() == 13240);
  auto davidson = destein::load_labeled_set(dir, "davidson_hate_offensive");
  CHECK(davidson.size() > 24000);
  for (const auto& spec : destein::labeled_sets()) {
    for (const auto& f : spec.files) CHECK(f.rfind("rtp/", 0) != 0);  // never training on RTP
  }
  CHECK_THROWS_WITH(destein::load_labeled_set(dir, "rtp_1k"),
                    Contains("unknown labelled set 'rtp_1k'") && Contains("olid"));
  auto rtp = destein::load_rtp_prompts(dir / "rtp/100/test.jsonl");
  CHECK(rtp.size() == 100);
}

TEST_CASE("scorer: the committed v1 scorer loads and ranks obvious cases", "[scorer]") {
  // v1 is no longer the default (scorer v2 is, tests/score/test_attribute_scorer.cpp) but
  // stays loadable.
  const fs::path path =
      fs::path(DESTEIN_SOURCE_DIR) / "models/scorer/toxicity-linear-v1.safetensors";
  REQUIRE(fs::exists(path));
  auto scorer = destein::LinearScorer::load(path);
  CHECK(scorer.probability("you are a fucking idiot") > 0.5);
  CHECK(scorer.probability("The committee will meet again on Tuesday.") < 0.5);
  CHECK(scorer.provenance().contains("training_data"));
}

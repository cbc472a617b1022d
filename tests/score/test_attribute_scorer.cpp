// Scorer v2 (eight Perspective attributes): a planted data set, save/load, file errors,
// v1/v2 dispatch, deterministic retraining, and the RTP training split's exclusions on the
// real data folder.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "experiment/config_node.hpp"
#include "experiment/scorer_training_experiment.hpp"
#include "io/csv.hpp"
#include "score/scorer_eval.hpp"
#include "train/rtp_training_split.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path tmp_dir() {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "attribute_scorer_tmp";
  fs::create_directories(dir);
  return dir;
}

fs::path data_dir() {
  if (const char* env = std::getenv("DESTEIN_DATA")) return env;
  return DESTEIN_DEFAULT_DATA_DIR;
}

// One made-up word per attribute; a sentence of filler words carries each with chance 1/4.
const std::vector<std::string> kWords = {"zorblax", "quibbet", "vrunk",  "plimsk",
                                         "drovel",  "skathe",  "mirtle", "fonzby"};
constexpr float kHigh = 0.9f, kLow = 0.05f;

struct Planted {
  std::string text;
  std::array<bool, destein::kNumAttributes> has{};
};

std::vector<Planted> planted(int n, uint64_t seed) {
  const std::vector<std::string> filler = {"the",   "a",     "house", "river",  "green",  "walks",
                                           "today", "with",  "their", "slowly", "bright", "we",
                                           "old",   "paper", "under", "seven",  "market", "sing"};
  std::mt19937_64 rng(seed);
  std::vector<Planted> out;
  for (int i = 0; i < n; ++i) {
    Planted p;
    std::vector<std::string> words;
    const int len = 4 + static_cast<int>(rng() % 8);
    for (int k = 0; k < len; ++k) words.push_back(filler[rng() % filler.size()]);
    for (int a = 0; a < destein::kNumAttributes; ++a) {
      if (rng() % 4 == 0) {
        p.has[static_cast<size_t>(a)] = true;
        words.insert(words.begin() + static_cast<int64_t>(rng() % (words.size() + 1)),
                     kWords[static_cast<size_t>(a)]);
      }
    }
    for (const auto& w : words) p.text += (p.text.empty() ? "" : " ") + w;
    out.push_back(std::move(p));
  }
  return out;
}

// Perspective-scored texts: each attribute scores kHigh when its word is there, kLow when
// not. Labelled texts: toxic (1) exactly when the toxicity word is there.
std::vector<destein::AttributeExample> planted_examples(uint64_t seed) {
  std::vector<destein::AttributeExample> out;
  for (const auto& p : planted(500, seed)) {
    destein::AttributeExample e;
    e.text = p.text;
    for (int a = 0; a < destein::kNumAttributes; ++a)
      e.target[static_cast<size_t>(a)] = p.has[static_cast<size_t>(a)] ? kHigh : kLow;
    e.source = "planted_perspective";
    e.perspective = true;
    out.push_back(e);
  }
  for (const auto& p : planted(300, seed + 1)) {
    destein::AttributeExample e;
    e.text = p.text;
    e.target.fill(std::numeric_limits<float>::quiet_NaN());
    e.target[0] = p.has[0] ? 1.0f : 0.0f;
    e.source = "planted_labels";
    out.push_back(e);
  }
  return out;
}

destein::LinearFeatureOptions small_features() {
  destein::LinearFeatureOptions f;
  f.hash_bits = 14;
  return f;
}

destein::AttributeTrainOptions small_options() {
  destein::AttributeTrainOptions t;
  t.linear.l2 = 1e-4;
  t.l2_other = 1e-4;
  t.other_hash_bits = 12;
  t.linear.max_iterations = 150;
  return t;
}

const destein::AttributeScorer& planted_scorer() {
  static const destein::AttributeScorer scorer =
      destein::AttributeScorer::train(planted_examples(1), small_features(), small_options());
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

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

TEST_CASE("attribute scorer: names are Perspective's eight, toxicity first", "[scorer]") {
  const auto& names = destein::perspective_attributes();
  CHECK(std::vector<std::string>(names.begin(), names.end()) ==
        std::vector<std::string>{"toxicity", "severe_toxicity", "profanity", "insult", "threat",
                                 "identity_attack", "sexually_explicit", "flirtation"});
  CHECK(destein::attribute_index("threat") == 4);
  CHECK_THROWS_WITH(destein::attribute_index("rudeness"),
                    Contains("unknown attribute 'rudeness'") && Contains("flirtation"));
}

TEST_CASE("attribute scorer: each head finds its planted word, calibrated to the targets",
          "[scorer]") {
  auto& scorer = const_cast<destein::AttributeScorer&>(planted_scorer());
  const auto test = planted(400, 99);  // fresh sentences, same rule
  std::vector<std::string> texts;
  for (const auto& p : test) texts.push_back(p.text);
  const auto all = scorer.score_attributes(texts);
  REQUIRE(all.size() == texts.size());
  CHECK(scorer.attributes() == std::vector<std::string>(destein::perspective_attributes().begin(),
                                                        destein::perspective_attributes().end()));
  for (int a = 0; a < destein::kNumAttributes; ++a) {
    INFO("attribute " << destein::perspective_attributes()[static_cast<size_t>(a)]);
    std::vector<double> p;
    std::vector<int> y;
    double sum[2] = {0, 0}, count[2] = {0, 0};
    for (size_t i = 0; i < test.size(); ++i) {
      REQUIRE(all[i].size() == destein::kNumAttributes);
      REQUIRE(all[i][static_cast<size_t>(a)].has_value());
      p.push_back(*all[i][static_cast<size_t>(a)]);
      const int has = test[i].has[static_cast<size_t>(a)] ? 1 : 0;
      y.push_back(has);
      sum[has] += p.back();
      count[has] += 1;
    }
    CHECK(destein::roc_auc(p, y) == 1.0);
    // Calibrated against the soft targets: the mean probability reads the target.
    CHECK(sum[1] / count[1] == Approx(kHigh).margin(0.05));
    CHECK(sum[0] / count[0] == Approx(kLow).margin(0.05));
  }
  // probability() is the toxicity head alone; score() is toxicity.
  const auto p = scorer.probabilities("the old market with a zorblax");
  CHECK(scorer.probability("the old market with a zorblax") == p[0]);
  CHECK(*scorer.score({"the old market with a zorblax"})[0] == p[0]);
  CHECK(p[0] > 0.5);
  CHECK(p[4] < 0.5);  // no threat word
  CHECK(scorer.probabilities("the old market with a drovel")[4] > 0.5);
}

TEST_CASE(
    "attribute scorer: save and load give identical scores, and retraining gives the same bytes",
    "[scorer]") {
  const auto& scorer = planted_scorer();
  const auto path = tmp_dir() / "planted_v2.safetensors";
  scorer.save(path);
  CHECK(scorer.name() == "linear-v2:" + path.string());
  const auto loaded = destein::AttributeScorer::load(path);
  CHECK(loaded.provenance() == scorer.provenance());
  CHECK(loaded.hash_bits(0) == 14);
  CHECK(loaded.hash_bits(7) == 12);
  CHECK(loaded.weight_bytes() == 2 * (16384 + 7 * 4096) + 4 * 8);
  size_t mismatches = 0;
  for (const auto& t : planted(200, 7)) {
    if (loaded.probabilities(t.text) != scorer.probabilities(t.text) && mismatches++ == 0) {
      FAIL_CHECK("first mismatch on '" << t.text << "'");
    }
  }
  CHECK(mismatches == 0);

  const auto again =
      destein::AttributeScorer::train(planted_examples(1), small_features(), small_options());
  const auto path2 = tmp_dir() / "planted_v2_again.safetensors";
  again.save(path2);
  CHECK(read_bytes(path) == read_bytes(path2));
}

TEST_CASE("attribute scorer: v1 and v2 files load by version, each refusing the other",
          "[scorer]") {
  const auto v2_path = tmp_dir() / "dispatch_v2.safetensors";
  planted_scorer().save(v2_path);
  std::vector<destein::LabeledText> v1_data;
  for (const auto& e : planted_examples(3)) {
    if (!e.perspective) v1_data.push_back({e.text, static_cast<int>(e.target[0]), "planted"});
  }
  destein::LinearTrainOptions t;
  t.l2 = 1e-4;
  const auto v1 = destein::LinearScorer::train(v1_data, small_features(), t);
  const auto v1_path = tmp_dir() / "dispatch_v1.safetensors";
  v1.save(v1_path);

  CHECK(destein::scorer_file_version(v1_path) == "1");
  CHECK(destein::scorer_file_version(v2_path) == "2");
  auto any1 = destein::load_offline_scorer(v1_path);
  auto any2 = destein::load_offline_scorer(v2_path);
  CHECK(any1->attributes() == std::vector<std::string>{"toxicity"});
  CHECK(any2->attributes().size() == 8);
  CHECK(any1->name() == "linear:" + v1_path.string());
  CHECK(any2->name() == "linear-v2:" + v2_path.string());
  const std::vector<std::string> texts = {"a zorblax today", "the river"};
  const auto s1 = any1->score_attributes(texts);
  REQUIRE(s1.size() == 2);
  REQUIRE(s1[0].size() == 1);
  CHECK(*s1[0][0] == v1.probability(texts[0]));
  const auto s2 = any2->score_attributes(texts);
  REQUIRE(s2[1].size() == 8);
  for (int a = 0; a < 8; ++a)
    CHECK(*s2[1][static_cast<size_t>(a)] ==
          planted_scorer().probabilities(texts[1])[static_cast<size_t>(a)]);

  CHECK_THROWS_WITH(destein::AttributeScorer::load(v1_path),
                    Contains("dispatch_v1.safetensors") && Contains("format_version 2") &&
                        Contains("v1") && Contains("load_offline_scorer"));
  CHECK_THROWS_WITH(destein::LinearScorer::load(v2_path),
                    Contains("dispatch_v2.safetensors") && Contains("format_version"));
}

TEST_CASE("attribute scorer: a corrupt, truncated or foreign file gives a clear error",
          "[scorer]") {
  const auto good = tmp_dir() / "good_v2.safetensors";
  planted_scorer().save(good);
  const std::string bytes = read_bytes(good);
  const auto bad = tmp_dir() / "bad_v2.safetensors";
  using destein::AttributeScorer;

  CHECK_THROWS_WITH(AttributeScorer::load(tmp_dir() / "missing.safetensors"),
                    Contains("missing.safetensors") && Contains("not found"));
  CHECK_THROWS_WITH(destein::load_offline_scorer(tmp_dir() / "missing.safetensors"),
                    Contains("not found"));

  write_bytes(bad, bytes.substr(0, bytes.size() - 100));
  CHECK_THROWS_WITH(AttributeScorer::load(bad),
                    Contains("bad_v2.safetensors") && Contains("truncated"));

  write_bytes(bad, bytes.substr(0, 5));
  CHECK_THROWS_WITH(AttributeScorer::load(bad), Contains("too short"));

  std::string flipped = bytes;
  flipped[flipped.size() - 1000] ^= 0x40;  // inside the last head's weights
  write_bytes(bad, flipped);
  CHECK_THROWS_WITH(AttributeScorer::load(bad), Contains("checksum"));

  write_bytes(bad, "{\"not\": \"a model\"}\n");
  CHECK_THROWS_WITH(AttributeScorer::load(bad), Contains("not a scorer file"));

  std::string newer = bytes;
  const auto v = newer.find("\"format_version\":\"2\"");
  REQUIRE(v != std::string::npos);
  newer[v + 18] = '7';
  write_bytes(bad, newer);
  CHECK_THROWS_WITH(AttributeScorer::load(bad), Contains("format_version") && Contains("'7'"));
  CHECK_THROWS_WITH(destein::load_offline_scorer(bad), Contains("bad_v2.safetensors") &&
                                                           Contains("format_version 1") &&
                                                           Contains("'7'"));

  std::string renamed = bytes;  // heads out of order: a head named for another attribute
  const auto h = renamed.find("\\\"attribute\\\":\\\"threat\\\"");
  REQUIRE(h != std::string::npos);
  renamed.replace(h + 16, 6, "thraet");
  write_bytes(bad, renamed);
  CHECK_THROWS_WITH(AttributeScorer::load(bad),
                    Contains("expected attribute 'threat', found 'thraet'"));

  std::string drift = bytes;  // a self-test score that no longer matches
  const auto st = drift.find("\\\"flirtation\\\":0.");
  REQUIRE(st != std::string::npos);
  char& digit = drift[st + 18];
  digit = digit == '9' ? '1' : static_cast<char>(digit + 1);
  write_bytes(bad, drift);
  CHECK_THROWS_WITH(AttributeScorer::load(bad),
                    Contains("self-test failed") && Contains("flirtation"));
}

TEST_CASE("attribute scorer: training refuses bad input", "[scorer]") {
  auto data = planted_examples(2);
  auto opt = small_options();
  SECTION("a Perspective-scored text without one of its targets") {
    data[3].target[5] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(destein::AttributeScorer::train(data, small_features(), opt),
                      Contains("identity_attack is missing"));
  }
  SECTION("a target outside [0, 1]") {
    data[3].target[2] = 1.5f;
    CHECK_THROWS_WITH(destein::AttributeScorer::train(data, small_features(), opt),
                      Contains("profanity target in [0, 1]") && Contains("1.5"));
  }
  SECTION("a labelled text with a soft label") {
    data.back().target[0] = 0.5f;
    CHECK_THROWS_WITH(destein::AttributeScorer::train(data, small_features(), opt),
                      Contains("toxicity 0 or 1"));
  }
  SECTION("other heads larger than the toxicity head") {
    opt.other_hash_bits = 16;
    CHECK_THROWS_WITH(destein::AttributeScorer::train(data, small_features(), opt),
                      Contains("other_hash_bits"));
  }
  SECTION("an option shared with v1 out of range names its key") {
    opt.linear.lbfgs_memory = 0;
    CHECK_THROWS_WITH(destein::AttributeScorer::train(data, small_features(), opt),
                      Contains("train.lbfgs_memory") && Contains("found 0"));
  }
  SECTION("class_balance off, which v2 does not do") {
    opt.linear.class_balance = false;
    CHECK_THROWS_WITH(destein::AttributeScorer::train(data, small_features(), opt),
                      Contains("train.class_balance") && Contains("found false"));
  }
  SECTION("no Perspective-scored texts") {
    std::vector<destein::AttributeExample> labels_only;
    for (const auto& e : data) {
      if (!e.perspective) labels_only.push_back(e);
    }
    CHECK_THROWS_WITH(destein::AttributeScorer::train(labels_only, small_features(), opt),
                      Contains("at least 20 Perspective-scored texts, found 0"));
  }
}

TEST_CASE(
    "attribute scorer: the v2: keys of a scorer config map onto the options v2 shares with v1",
    "[scorer]") {
  const auto load = [](const std::string& yaml) {
    return destein::scorer_training_schema().load(destein::ConfigNode::load_string(yaml, "s.yaml"));
  };
  const auto e = load(
      "version: 2\n"
      "v2:\n  l2: 0.25\n  l2_other: 0.5\n  other_hash_bits: 12\n  perspective_share: 0.75\n"
      "  max_iterations: 7\n  tolerance: 0.125\n  lbfgs_memory: 3\n  calibration_fraction: 0.375\n"
      "  seed: 99\n");
  CHECK(e.v2.linear.l2 == 0.25);
  CHECK(e.v2.l2_other == 0.5);
  CHECK(e.v2.other_hash_bits == 12);
  CHECK(e.v2.perspective_share == 0.75);
  CHECK(e.v2.linear.max_iterations == 7);
  CHECK(e.v2.linear.tolerance == 0.125);
  CHECK(e.v2.linear.lbfgs_memory == 3);
  CHECK(e.v2.linear.calibration_fraction == 0.375);
  CHECK(e.v2.linear.seed == 99);
  CHECK(e.v2.linear.class_balance);
  // v1's train: section is its own: nothing written under v2: reaches it.
  CHECK(e.train.l2 == destein::LinearTrainOptions().l2);
  CHECK(e.train.seed == destein::LinearTrainOptions().seed);

  // The dump lists v2's nine keys in their documented order, and reads back to the same options.
  const std::string dump = destein::dump_scorer_training_experiment(e);
  const auto v2_at = dump.find("\nv2:\n");
  REQUIRE(v2_at != std::string::npos);
  size_t at = v2_at;
  for (const char* key :
       {"l2", "l2_other", "other_hash_bits", "perspective_share", "max_iterations", "tolerance",
        "lbfgs_memory", "calibration_fraction", "seed"}) {
    const auto next = dump.find(std::string("\n  ") + key + ": ", at);
    INFO(key);
    REQUIRE(next != std::string::npos);
    at = next + 1;
  }
  CHECK(dump.find("class_balance", v2_at) == std::string::npos);
  const auto again = load(dump);
  CHECK(again.v2.linear.l2 == 0.25);
  CHECK(again.v2.linear.seed == 99);
  CHECK(again.v2.linear.calibration_fraction == 0.375);
  CHECK(destein::dump_scorer_training_experiment(again) == dump);

  CHECK_THROWS_WITH(load("version: 2\nv2:\n  class_balance: false\n"),
                    Contains("s.yaml:3") && Contains("unknown key v2.class_balance"));
}

TEST_CASE("attribute scorer: the RTP training split holds no evaluation-only prompt",
          "[scorer][data]") {
  const fs::path dir = data_dir();
  if (!fs::is_directory(dir / "rtp")) {
    WARN("data not found, skipped: " << dir);
    return;
  }
  // Independent of the split's code: the evaluation prompts by the README's rule (exact
  // text after trimming), read with a plain JSON parse per line.
  std::set<std::string> eval_exact;
  auto read_prompts = [](const fs::path& f) {
    std::vector<std::string> out;
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty())
        out.push_back(nlohmann::json::parse(line)["prompt"]["text"].get<std::string>());
    }
    return out;
  };
  for (const char* f :
       {"rtp/1k/output_toxic_1k.jsonl", "rtp/1k/output_no_toxic_1k.jsonl", "rtp/100/test.jsonl"}) {
    for (const auto& t : read_prompts(dir / f)) eval_exact.insert(trim(t));
  }
  size_t dexperts_prompts = 0;
  {
    auto csv = destein::CsvReader::open(dir / "rtp/extra/dexperts_human_eval_toxicity.csv");
    csv.read_header();
    const size_t col = csv.column("sentprefix");
    destein::CsvRecord rec;
    std::set<std::string> seen;
    while (csv.next(rec)) {
      if (seen.insert(trim(rec.fields[col])).second) ++dexperts_prompts;
      eval_exact.insert(trim(rec.fields[col]));
    }
  }
  CHECK(dexperts_prompts == 120);  // README: 120 RTP prompts

  const auto split = destein::load_rtp_training_split(dir);
  CHECK(split.read == 10000);
  size_t leaks = 0;
  std::set<std::string> kept;
  for (const auto& p : split.prompts) {
    if (eval_exact.count(trim(p.text)) && leaks++ == 0)
      FAIL_CHECK("evaluation prompt in training: " << p.text);
    kept.insert(trim(p.text));
    for (double s : p.scores) REQUIRE((s >= 0.0 && s <= 1.0));
  }
  CHECK(leaks == 0);
  CHECK(kept.size() == split.prompts.size());  // each prompt once
  // README: all 100 of rtp/100 come from rtp/5k; 431 + 56 prompts of rtp/1k are in rtp/5k.
  CHECK(split.excluded_100 == 100);
  CHECK(split.excluded_1k >= 431 + 56);
  // The number removed equals the 5k prompts an exact trimmed match finds in the
  // evaluation files (the split's looser key finds no more here).
  size_t exact_hits = 0;
  for (const char* f : {"rtp/5k/output_toxic_5k.jsonl", "rtp/5k/output_no_toxic_5k.jsonl"}) {
    for (const auto& t : read_prompts(dir / f)) exact_hits += eval_exact.count(trim(t));
  }
  CHECK(split.excluded == static_cast<int64_t>(exact_hits));
  CHECK(split.read == split.excluded + split.repeats + static_cast<int64_t>(split.prompts.size()));
  CHECK(split.prompts.size() > 9000);
  // The key: trimmed, whitespace runs collapsed, ASCII lower-cased.
  CHECK(destein::rtp_match_key("  The  Cat\tsat\n") == "the cat sat");
  CHECK(destein::rtp_match_key("caf\xC3\x89 ") == "caf\xC3\x89");
}

TEST_CASE("attribute scorer: RTP files with a missing or bad attribute name file and line",
          "[scorer]") {
  const auto f = tmp_dir() / "bad_rtp.jsonl";
  std::ofstream(f)
      << R"({"prompt": {"text": "a", "toxicity": 0.1, "severe_toxicity": 0.1, "profanity": 0.1, "insult": 0.1, "threat": 0.1, "identity_attack": 0.1, "sexually_explicit": 0.1, "flirtation": 0.1}})"
      << "\n"
      << R"({"prompt": {"text": "b", "toxicity": 0.1, "severe_toxicity": 0.1, "profanity": 0.1, "insult": 0.1, "identity_attack": 0.1, "sexually_explicit": 0.1, "flirtation": 0.1}})"
      << "\n";
  CHECK_THROWS_WITH(destein::load_rtp_scored_prompts(f),
                    Contains("bad_rtp.jsonl:2") && Contains("'prompt.threat'"));
  std::ofstream(f)
      << R"({"prompt": {"text": "a", "toxicity": 1.2, "severe_toxicity": 0.1, "profanity": 0.1, "insult": 0.1, "threat": 0.1, "identity_attack": 0.1, "sexually_explicit": 0.1, "flirtation": 0.1}})"
      << "\n";
  CHECK_THROWS_WITH(destein::load_rtp_scored_prompts(f),
                    Contains("bad_rtp.jsonl:1") && Contains("'prompt.toxicity' in [0, 1]"));
}

TEST_CASE("attribute scorer: the committed v2 default and the v1 file both load", "[scorer]") {
  const fs::path v2 =
      fs::path(DESTEIN_SOURCE_DIR) / "models/scorer/perspective-linear-v2.safetensors";
  const fs::path v1 = fs::path(DESTEIN_SOURCE_DIR) / "models/scorer/toxicity-linear-v1.safetensors";
  REQUIRE(fs::exists(v2));
  REQUIRE(fs::exists(v1));
  if (!std::getenv("DESTEIN_SCORER")) CHECK(fs::equivalent(destein::default_scorer_path(), v2));
  const auto scorer = destein::AttributeScorer::load(v2);
  const auto p = scorer.probabilities("you are a fucking idiot");
  CHECK(p[0] > 0.5);
  CHECK(p[2] > 0.5);  // profanity
  CHECK(scorer.probability("The committee will meet again on Tuesday.") < 0.2);
  CHECK(scorer.provenance().contains("rtp_split"));
  CHECK(fs::file_size(v2) < 6u * 1024 * 1024);
  const auto old = destein::LinearScorer::load(v1);
  CHECK(old.probability("you are a fucking idiot") > 0.5);
}

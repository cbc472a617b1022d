// Evaluation metrics (EMT, TP, distinct-n, perplexity) against hand-computed values, and
// the prompted-generations reader.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "destein/eval/metrics.hpp"
#include "io/jsonl.hpp"

using Catch::Matchers::Contains;
using destein::PromptGenerations;
namespace fs = std::filesystem;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr auto kNone = std::nullopt;

fs::path write_temp(const std::string& name, const std::string& content) {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "metrics_tmp";
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

PromptGenerations scored(std::vector<std::optional<double>> tox) {
  PromptGenerations p;
  p.prompt = "p";
  p.texts.assign(tox.size(), "t");
  p.toxicity = std::move(tox);
  return p;
}

PromptGenerations texts(std::vector<std::string> t) {
  PromptGenerations p;
  p.prompt = "p";
  p.texts = std::move(t);
  return p;
}

}  // namespace

TEST_CASE("metrics: EMT, std and TP by hand", "[metrics]") {
  // Prompt maxima: A = max(0.1, 0.7, -) = 0.7; B = max(0.5, 0.2) = 0.5; C = 0.3.
  // D has only missing scores and E no generation: both dropped.
  // EMT = (0.7 + 0.5 + 0.3) / 3 = 0.5.
  // Population std = sqrt((0.2^2 + 0^2 + 0.2^2) / 3) = sqrt(0.08 / 3) = 0.1632993...
  // (the sample std, ddof = 1, would be 0.2).
  // TP = 1/3: only A is > 0.5; B's maximum is exactly 0.5 and must not count.
  std::vector<PromptGenerations> rows = {scored({0.1, 0.7, kNone}), scored({0.5, 0.2}),
                                         scored({0.3}), scored({kNone, kNone}), scored({})};
  auto m = destein::toxicity_metrics(rows);
  CHECK(m.expected_max_toxicity == Approx(0.5).margin(1e-12));
  CHECK(m.expected_max_toxicity_std == Approx(std::sqrt(0.08 / 3.0)).epsilon(1e-12));
  CHECK(m.toxicity_probability == Approx(1.0 / 3.0).epsilon(1e-12));
  // HELM's convention (>= 0.5) counts B too: 2/3.
  CHECK(m.toxicity_probability_ge == Approx(2.0 / 3.0).epsilon(1e-12));
  CHECK(m.num_prompts == 3);
  CHECK(m.dropped_prompts == 2);
  CHECK(m.missing_scores == 3);
}

TEST_CASE("metrics: TP counts a prompt once however many toxic generations", "[metrics]") {
  // Maxima 0.9 and 0.51: both > 0.5, TP = 1; EMT = 0.705; std = |0.9 - 0.705| = 0.195.
  auto m = destein::toxicity_metrics({scored({0.9, 0.8, 0.6}), scored({0.51, 0.0})});
  CHECK(m.toxicity_probability == 1.0);
  CHECK(m.toxicity_probability_ge == 1.0);
  CHECK(m.expected_max_toxicity == Approx(0.705).epsilon(1e-12));
  CHECK(m.expected_max_toxicity_std == Approx(0.195).epsilon(1e-12));
}

TEST_CASE("metrics: no scored prompt gives NaN, a NaN score throws", "[metrics]") {
  auto m = destein::toxicity_metrics({scored({kNone}), scored({})});
  CHECK(std::isnan(m.expected_max_toxicity));
  CHECK(std::isnan(m.expected_max_toxicity_std));
  CHECK(std::isnan(m.toxicity_probability));
  CHECK(std::isnan(m.toxicity_probability_ge));
  CHECK(m.num_prompts == 0);
  CHECK(m.dropped_prompts == 2);
  CHECK(m.missing_scores == 1);
  REQUIRE_THROWS_WITH(destein::toxicity_metrics({scored({0.2}), scored({0.1, kNaN})}),
                      Contains("prompt 1 generation 1") && Contains("finite"));
}

TEST_CASE("metrics: split on ' ' as Python's str.split(' ')", "[metrics]") {
  using V = std::vector<std::string>;
  CHECK(destein::split_on_space("a b") == V{"a", "b"});
  CHECK(destein::split_on_space(" a") == V{"", "a"});
  CHECK(destein::split_on_space("a ") == V{"a", ""});
  CHECK(destein::split_on_space("a  b") == V{"a", "", "b"});
  CHECK(destein::split_on_space("") == V{""});
  // Only ' ' separates: a tab or newline stays inside the word.
  CHECK(destein::split_on_space("a\tb\nc") == V{"a\tb\nc"});
}

TEST_CASE("metrics: distinct-n by hand", "[metrics]") {
  // Prompt 1: " a b" -> {"", a, b}; "a b a" -> {a, b, a}; 6 words.
  //   unigrams {"", a, b} = 3 -> 3/6 = 0.5
  //   bigrams {("",a), (a,b), (b,a)} = 3 -> 0.5
  //   trigrams {("",a,b), (a,b,a)} = 2 -> 1/3
  // Prompt 2: "x x x x" -> 4 words; {x}, {(x,x)}, {(x,x,x)} -> 1/4 each (repeats count once).
  // Prompt 3: no generation -> skipped.
  // dist_1 = (0.5 + 0.25) / 2 = 0.375; dist_2 = 0.375; dist_3 = (1/3 + 1/4) / 2 = 7/24.
  auto m = destein::distinct_metrics({texts({" a b", "a b a"}), texts({"x x x x"}), texts({})});
  CHECK(m.dist_1 == Approx(0.375).epsilon(1e-12));
  CHECK(m.dist_2 == Approx(0.375).epsilon(1e-12));
  CHECK(m.dist_3 == Approx(7.0 / 24.0).epsilon(1e-12));
  CHECK(m.num_prompts == 2);
  CHECK(m.skipped_prompts == 1);
}

TEST_CASE("metrics: distinct-n edge cases", "[metrics]") {
  // N-grams do not cross generations: "a" and "b" give 2 words, 2 unigrams, no bigram.
  auto m = destein::distinct_metrics({texts({"a", "b"})});
  CHECK(m.dist_1 == 1.0);
  CHECK(m.dist_2 == 0.0);
  CHECK(m.dist_3 == 0.0);
  // An empty generation is one empty word (as in Python): 1 unigram / 1 word.
  m = destein::distinct_metrics({texts({""})});
  CHECK(m.dist_1 == 1.0);
  CHECK(m.dist_2 == 0.0);
  // Words are compared as sequences: (a_b, c) and (a, b_c) are two bigrams over 4 words,
  // 0.5 (the reference's '_'-joined keys would make them one, 0.25).
  m = destein::distinct_metrics({texts({"a_b c", "a b_c"})});
  CHECK(m.dist_2 == 0.5);
  // Nothing to average: NaN.
  m = destein::distinct_metrics({texts({})});
  CHECK(std::isnan(m.dist_1));
  CHECK(m.num_prompts == 0);
  CHECK(m.skipped_prompts == 1);
}

TEST_CASE("metrics: conditional perplexity and its mean", "[metrics]") {
  // (10 - 4) / (8 - 5) = 2 -> e^2.
  CHECK(destein::conditional_perplexity(10.0, 4.0, 8, 5) == Approx(std::exp(2.0)).epsilon(1e-12));
  // Empty prompt: plain perplexity of the generation, exp(3 / 3) = e.
  CHECK(destein::conditional_perplexity(3.0, 0.0, 3, 0) == Approx(std::exp(1.0)).epsilon(1e-12));
  // Overflow is +inf, left for mean_perplexity to drop.
  CHECK(std::isinf(destein::conditional_perplexity(1000.0, 0.0, 2, 1)));
  REQUIRE_THROWS_WITH(destein::conditional_perplexity(5.0, 4.0, 5, 5),
                      Contains("at least one token"));
  REQUIRE_THROWS_AS(destein::conditional_perplexity(5.0, 4.0, 5, -1), std::invalid_argument);

  // Kept: 2, 4, 9999 -> mean 10005 / 3 = 3335. Dropped: 1e4 (>= 1e4), inf, NaN.
  auto s = destein::mean_perplexity({2.0, 1e4, 4.0, kInf, 9999.0, kNaN});
  CHECK(s.mean == Approx(3335.0).epsilon(1e-12));
  CHECK(s.kept == 3);
  CHECK(s.dropped == 3);
  // Another threshold: 2 and 4 kept -> 3.
  s = destein::mean_perplexity({2.0, 1e4, 4.0, kInf, 9999.0, kNaN}, 5.0);
  CHECK(s.mean == Approx(3.0).epsilon(1e-12));
  CHECK(s.dropped == 4);
  s = destein::mean_perplexity({kNaN, 2e4});
  CHECK(std::isnan(s.mean));
  CHECK(s.kept == 0);
  CHECK(s.dropped == 2);
  REQUIRE_THROWS_WITH(destein::mean_perplexity({1.0}, 0.0), Contains("drop_at"));
}

TEST_CASE("metrics: reads prompted generations", "[metrics]") {
  auto p = write_temp(
      "gens.jsonl",
      "{\"prompt\": {\"text\": \"So I\", \"toxicity\": 0.1}, \"id\": 7, \"generations\": ["
      "{\"text\": \" said\", \"toxicity\": 0.25}, {\"text\": \" ran\", \"toxicity\": null}, "
      "{\"text\": \"\"}]}\n"
      "\n"
      "{\"prompt\": {\"text\": \"B\"}, \"generations\": []}\n");
  int64_t malformed = -1;
  auto rows = destein::read_generations_jsonl(p, false, &malformed);
  CHECK(malformed == 0);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].prompt == "So I");
  CHECK(rows[0].texts == std::vector<std::string>{" said", " ran", ""});
  REQUIRE(rows[0].toxicity.size() == 3);
  CHECK(rows[0].toxicity[0] == 0.25);
  CHECK_FALSE(rows[0].toxicity[1].has_value());
  CHECK_FALSE(rows[0].toxicity[2].has_value());
  CHECK(rows[1].prompt == "B");
  CHECK(rows[1].texts.empty());
}

TEST_CASE("metrics: reader round trip through JsonlWriter", "[metrics]") {
  std::vector<PromptGenerations> rows = {
      {"one", {" a", "b c"}, {0.5, std::nullopt}},
      {"two \"quoted\"\n", {"\u00e9"}, {1.0}},
  };
  fs::path p = write_temp("round.jsonl", "");
  {
    destein::JsonlWriter out(p);
    for (const auto& r : rows) {
      nlohmann::json gens = nlohmann::json::array();
      for (size_t i = 0; i < r.texts.size(); ++i) {
        nlohmann::json tox = r.toxicity[i] ? nlohmann::json(*r.toxicity[i]) : nlohmann::json();
        gens.push_back({{"text", r.texts[i]}, {"toxicity", tox}});
      }
      out.write({{"prompt", {{"text", r.prompt}}}, {"generations", gens}});
    }
    out.close();
  }
  auto back = destein::read_generations_jsonl(p);
  REQUIRE(back.size() == rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    CHECK(back[i].prompt == rows[i].prompt);
    CHECK(back[i].texts == rows[i].texts);
    CHECK(back[i].toxicity == rows[i].toxicity);
  }
}

TEST_CASE("metrics: malformed lines name file:line, or are skipped and counted", "[metrics]") {
  const std::string good =
      "{\"prompt\": {\"text\": \"p\"}, \"generations\": [{\"text\": \"g\"}]}\n";
  auto not_json = write_temp("bad1.jsonl", good + "{oops\n");
  REQUIRE_THROWS_WITH(destein::read_generations_jsonl(not_json),
                      Contains(not_json.string() + ":2"));
  auto bad_tox = write_temp(
      "bad2.jsonl", good + good +
                        "{\"prompt\": {\"text\": \"p\"}, \"generations\": [{\"text\": \"g\"}, "
                        "{\"text\": \"h\", \"toxicity\": \"high\"}]}\n");
  REQUIRE_THROWS_WITH(
      destein::read_generations_jsonl(bad_tox),
      Contains(bad_tox.string() + ":3") && Contains("generations[1].toxicity: expected a number"));
  auto no_gens = write_temp("bad3.jsonl", "{\"prompt\": {\"text\": \"p\"}}\n");
  REQUIRE_THROWS_WITH(destein::read_generations_jsonl(no_gens),
                      Contains(no_gens.string() + ":1") && Contains("\"generations\" array"));
  auto str_prompt = write_temp("bad4.jsonl", "{\"prompt\": \"p\", \"generations\": []}\n");
  REQUIRE_THROWS_WITH(destein::read_generations_jsonl(str_prompt),
                      Contains(":1") && Contains("string \"text\""));
  REQUIRE_THROWS_AS(
      destein::read_generations_jsonl(fs::path(DESTEIN_TEST_BINARY_DIR) / "no_such.jsonl"),
      std::runtime_error);

  // Skip mode: good, not JSON, no generations, bad toxicity, a JSON array, good -> 2 rows, 4
  // malformed.
  auto mixed = write_temp(
      "mixed.jsonl",
      good + "{oops\n" + "{\"prompt\": {\"text\": \"p\"}}\n" +
          "{\"prompt\": {\"text\": \"p\"}, \"generations\": [{\"text\": \"g\", \"toxicity\": "
          "true}]}\n" +
          "[1, 2]\n" + good);
  int64_t malformed = -1;
  auto rows = destein::read_generations_jsonl(mixed, true, &malformed);
  CHECK(rows.size() == 2);
  CHECK(malformed == 4);
}

TEST_CASE("Spearman's rank correlation, computed by hand", "[eval][metrics]") {
  // No ties: ranks (1,2,3,4,5) against (2,1,4,3,5); d^2 = 1+1+1+1+0 = 4,
  // rho = 1 - 6*4 / (5*24) = 0.8.
  CHECK(destein::spearman_rank_correlation({0.1, 0.2, 0.3, 0.4, 0.5}, {2, 1, 4, 3, 5}) ==
        Approx(0.8).epsilon(1e-12));
  CHECK(destein::spearman_rank_correlation({1, 2, 3}, {30, 20, 10}) == Approx(-1.0).epsilon(1e-12));
  // Ties share their mean rank: a = (1, 2.5, 2.5, 4), b = (1, 2, 3, 4); Pearson of the ranks
  // is 4.5 / sqrt(4.5 * 5) = 0.948683...
  CHECK(destein::spearman_rank_correlation({0.1, 0.5, 0.5, 0.9}, {1, 2, 3, 4}) ==
        Approx(4.5 / std::sqrt(4.5 * 5.0)).epsilon(1e-12));
  CHECK(std::isnan(destein::spearman_rank_correlation({1, 1, 1}, {1, 2, 3})));
  CHECK_THROWS_WITH(destein::spearman_rank_correlation({1}, {1}),
                    Catch::Matchers::Contains("two pairs"));
  CHECK_THROWS_WITH(destein::spearman_rank_correlation({1, 2}, {1, 2, 3}),
                    Catch::Matchers::Contains("2 values against 3"));
}

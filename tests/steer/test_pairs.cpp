// Steering pairs: the two readers (JSON Lines layouts, ParaDetox TSV on the real file),
// the reference's cleaning, seeded sampling, deduplication, the writer and the set hash.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "destein/steer/pairs.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path write_temp(const std::string& name, const std::string& content) {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "pairs_tmp";
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

std::vector<destein::SteeringPair> numbered_pairs(int n) {
  std::vector<destein::SteeringPair> pairs;
  for (int i = 0; i < n; ++i) {
    pairs.push_back({"toxic " + std::to_string(i), "nice " + std::to_string(i), {{"id", i}}});
  }
  return pairs;
}

const fs::path kParadetox = fs::path(DESTEIN_DEFAULT_DATA_DIR) / "paradetox" / "paradetox.tsv";

}  // namespace

TEST_CASE("pairs: cleaning is the reference's (prefix + text).strip(\" .\").strip(\".\")",
          "[pairs]") {
  using destein::clean_pair_text;
  using destein::steering_input_text;
  // Worked out by hand from Python's str.strip semantics (only ' ' and '.' are stripped).
  CHECK(clean_pair_text("x . .") == "x");  // the old strip().rstrip(".").strip() gave "x ."
  CHECK(clean_pair_text("he is an idiot.  ") == "he is an idiot");
  CHECK(clean_pair_text("ok.. ") == "ok");
  CHECK(clean_pair_text("  leading kept") == "  leading kept");  // after a prefix: not at an end
  CHECK(clean_pair_text("tab\t") == "tab\t");                    // strip(" .") keeps \t and \n
  CHECK(clean_pair_text("line one\nline two.") == "line one\nline two");
  CHECK(clean_pair_text("what ?") == "what ?");
  CHECK(clean_pair_text("a.b") == "a.b");
  CHECK(clean_pair_text(" ... ") == "");
  CHECK(clean_pair_text("") == "");
  const std::string p = "The following text is kind: ";
  CHECK(steering_input_text(p, "x . .") == "The following text is kind: x");
  CHECK(steering_input_text(p, " hi.") == "The following text is kind:  hi");
  CHECK(steering_input_text(p, "...hi") == "The following text is kind: ...hi");
  CHECK(steering_input_text(p, "wait .\n") == "The following text is kind: wait .\n");
  CHECK(steering_input_text(p, " . ") == "The following text is kind:");  // strips into the prefix
  CHECK(steering_input_text("", " ..hi. . ") == "hi");
  CHECK(steering_input_text(". .", "x") == "x");
  // A text cleaned first gives the same model input as the raw text.
  for (const char* raw : {"x . .", " hi.", "wait .\n", "a. b .  "}) {
    INFO(raw);
    CHECK(steering_input_text(p, clean_pair_text(raw)) == steering_input_text(p, raw));
  }
}

TEST_CASE("pairs: the prefixes are the reference's templates", "[pairs]") {
  destein::PairPrefixes prefixes;
  CHECK(prefixes.toxic ==
        "The following text is abusive, harmful, negative, obscene, racist, rude and toxic: ");
  CHECK(prefixes.nontoxic ==
        "The following text is kind, polite, positive, respectful and supportive: ");
}

TEST_CASE("pairs: JSON Lines in both layouts, with provenance", "[pairs]") {
  auto p = write_temp("layouts.jsonl",
                      "[\"you idiot.\", \"you silly person.\"]\n"
                      "\n"
                      "{\"toxic\": \" shut up \", \"nontoxic\": \"please be quiet\"}\n"
                      "{\"toxic\": \"a\", \"non_toxic\": \"b\", \"seed\": 4, \"model\": \"gpt2\"}\n"
                      "{\"toxic\": \"c\", \"non-toxic\": \"d\", \"provenance\": {\"seed\": 9}, "
                      "\"score\": 0.9}\r\n");
  auto pairs = destein::load_pairs_jsonl(p);
  REQUIRE(pairs.size() == 4);
  CHECK(pairs[0].toxic == "you idiot");
  CHECK(pairs[0].nontoxic == "you silly person");
  CHECK(pairs[0].provenance == nlohmann::json({{"source", "layouts.jsonl"}, {"line", 1}}));
  CHECK(pairs[1].toxic == " shut up");  // the start is kept, as after the reference's prefix
  CHECK(pairs[1].provenance["line"] == 3);
  CHECK(pairs[2].nontoxic == "b");
  CHECK(pairs[2].provenance == nlohmann::json({{"seed", 4}, {"model", "gpt2"}}));
  CHECK(pairs[3].nontoxic == "d");
  CHECK(pairs[3].provenance == nlohmann::json({{"seed", 9}, {"score", 0.9}}));

  destein::PairLoadOptions raw;
  raw.clean = false;
  CHECK(destein::load_pairs_jsonl(p, raw)[0].toxic == "you idiot.");
}

TEST_CASE("pairs: JSON Lines errors name file:line and what was expected", "[pairs]") {
  const std::string ok = "[\"a\", \"b\"]\n{\"toxic\": \"c\", \"nontoxic\": \"d\"}\n";
  auto check = [&](const std::string& name, const std::string& third_line,
                   const std::string& expected) {
    auto p = write_temp(name, ok + third_line + "\n");
    CHECK_THROWS_AS(destein::load_pairs_jsonl(p), std::runtime_error);
    CHECK_THROWS_WITH(destein::load_pairs_jsonl(p), Contains(name + ":3") && Contains(expected));
  };
  check("pairs.jsonl", "{\"toxic\": \"x\"", "expected one JSON value");         // malformed
  check("short.jsonl", "[\"only one\"]", "2-element array");                    // wrong size
  check("type.jsonl", "[\"x\", 3]", "to be a string, found number");            // wrong type
  check("scalar.jsonl", "\"just text\"", "found string");                       // not a pair
  check("nokey.jsonl", "{\"toxic\": \"x\", \"polite\": \"y\"}", "'nontoxic'");  // missing key
  check("notoxic.jsonl", "{\"text\": \"x\"}", "expected keys 'toxic' and 'nontoxic'");
  check("both.jsonl", "{\"toxic\": \"x\", \"nontoxic\": \"y\", \"non_toxic\": \"z\"}",
        "found both 'nontoxic' and 'non_toxic'");
  check("objtype.jsonl", "{\"toxic\": null, \"nontoxic\": \"y\"}", "found null");
  check("empty.jsonl", "{\"toxic\": \" . \", \"nontoxic\": \"y\"}",
        "the toxic text is empty after cleaning");
  check("prov.jsonl", "{\"toxic\": \"x\", \"nontoxic\": \"y\", \"provenance\": 3}",
        "'provenance' to be an object");

  auto blank = write_temp("blank.jsonl", "\n  \n");
  CHECK_THROWS_WITH(destein::load_pairs_jsonl(blank),
                    Contains("blank.jsonl") && Contains("holds no pairs"));
  CHECK_THROWS_WITH(destein::load_pairs_jsonl("/nonexistent/pairs.jsonl"),
                    Contains("/nonexistent/pairs.jsonl"));
}

TEST_CASE("pairs: ParaDetox-format TSV, small file", "[pairs]") {
  auto p = write_temp("mini.tsv",
                      "toxic\tneutral1\tneutral2\tneutral3\n"
                      "he is a damn fool .\the is a fool.\the is not wise\t\n"
                      "\"a \"\"quoted\"\"\nfucking line\"\ta quoted line\t\t\n"
                      "shut up\tbe quiet\t\tplease be quiet\n");
  auto pairs = destein::load_paradetox(p);
  REQUIRE(pairs.size() == 5);
  CHECK(pairs[0].toxic == "he is a damn fool");
  CHECK(pairs[0].nontoxic == "he is a fool");
  CHECK(pairs[0].provenance ==
        nlohmann::json({{"source", "mini.tsv"}, {"row", 1}, {"line", 2}, {"column", "neutral1"}}));
  CHECK(pairs[1].nontoxic == "he is not wise");
  CHECK(pairs[2].toxic == "a \"quoted\"\nfucking line");
  CHECK(pairs[2].provenance["line"] == 3);
  CHECK(pairs[3].provenance["line"] == 5);  // the quoted field took two physical lines
  CHECK(pairs[4].provenance["column"] == "neutral3");
  CHECK(pairs[4].provenance["row"] == 3);

  destein::PairLoadOptions first;
  first.first_neutral_only = true;
  auto firsts = destein::load_paradetox(p, first);
  REQUIRE(firsts.size() == 3);
  CHECK(firsts[2].nontoxic == "be quiet");

  auto header = write_temp("header.tsv", "toxic\tneutral\n");
  CHECK_THROWS_WITH(destein::load_paradetox(header),
                    Contains("header.tsv") && Contains("toxic, neutral1, neutral2, neutral3") &&
                        Contains("found 'toxic', 'neutral'"));
  auto comma = write_temp("comma.csv", "toxic,neutral1,neutral2,neutral3\n");
  CHECK_THROWS_WITH(destein::load_paradetox(comma), Contains("not a ParaDetox TSV"));
  auto fields = write_temp("fields.tsv", "toxic\tneutral1\tneutral2\tneutral3\na\tb\t\t\nc\td\n");
  CHECK_THROWS_WITH(destein::load_paradetox(fields), Contains("fields.tsv:3"));
  auto no_toxic = write_temp("notoxic.tsv", "toxic\tneutral1\tneutral2\tneutral3\n\tb\t\t\n");
  CHECK_THROWS_WITH(destein::load_paradetox(no_toxic),
                    Contains("notoxic.tsv:2") && Contains("toxic text is empty"));
  auto only_header = write_temp("onlyheader.tsv", "toxic\tneutral1\tneutral2\tneutral3\n");
  CHECK_THROWS_WITH(destein::load_paradetox(only_header), Contains("no pairs"));
  auto empty = write_temp("empty.tsv", "");
  CHECK_THROWS_WITH(destein::load_paradetox(empty), Contains("empty.tsv") && Contains("empty"));
}

TEST_CASE("pairs: the real ParaDetox file gives 11,927 rows and 19,743 pairs", "[pairs]") {
  if (!fs::exists(kParadetox)) {
    WARN("skipped: " << kParadetox.string() << " is absent (shared data folder not staged)");
    return;
  }
  auto pairs = destein::load_paradetox(kParadetox);
  CHECK(pairs.size() == 19743);
  std::set<int64_t> rows;
  for (const auto& pair : pairs) rows.insert(pair.provenance["row"].get<int64_t>());
  CHECK(rows.size() == 11927);
  CHECK(*rows.rbegin() == 11927);
  CHECK(pairs.back().provenance["line"].get<int64_t>() > 11927);  // quoted newlines before it

  // Row 726 (line 727) has a neutral2 spanning two lines inside quotes.
  auto it = std::find_if(pairs.begin(), pairs.end(), [](const destein::SteeringPair& p) {
    return p.provenance["row"] == 726 && p.provenance["column"] == "neutral2";
  });
  REQUIRE(it != pairs.end());
  CHECK(it->provenance["line"] == 727);
  CHECK(it->toxic ==
        "schandelmeier , who are you trying to impress with this ridiculous article ?");
  CHECK(it->nontoxic == "schandelmeier , who are you trying to impress with this\narticle ?");

  destein::PairLoadOptions first;
  first.first_neutral_only = true;
  CHECK(destein::load_paradetox(kParadetox, first).size() == 11927);
}

TEST_CASE("pairs: sampling is seeded, without replacement, in input order", "[pairs]") {
  auto pairs = numbered_pairs(100);
  auto a = destein::sample_pairs(pairs, 20, 7);
  auto b = destein::sample_pairs(pairs, 20, 7);
  REQUIRE(a.size() == 20);
  std::vector<int> ids, ids_b;
  for (const auto& p : a) ids.push_back(p.provenance["id"].get<int>());
  for (const auto& p : b) ids_b.push_back(p.provenance["id"].get<int>());
  CHECK(ids == ids_b);
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  CHECK(std::set<int>(ids.begin(), ids.end()).size() == 20);
  // Pinned, from an independent Python splitmix64 + partial Fisher-Yates: the same seed
  // must pick the same pairs on every platform and compiler.
  CHECK(ids == std::vector<int>{1,  5,  9,  12, 15, 25, 26, 33, 34, 35,
                                42, 44, 58, 59, 62, 70, 80, 83, 87, 98});

  std::vector<int> other;
  for (const auto& p : destein::sample_pairs(pairs, 20, 8)) other.push_back(p.provenance["id"]);
  CHECK(other != ids);

  // Growing the sample keeps the pairs already chosen.
  std::set<int> bigger;
  for (const auto& p : destein::sample_pairs(pairs, 21, 7))
    bigger.insert(p.provenance["id"].get<int>());
  for (int id : ids) CHECK(bigger.count(id) == 1);

  CHECK(destein::sample_pairs(pairs, 100, 3).size() == 100);
  CHECK(destein::sample_pairs(pairs, 0, 3).empty());
  CHECK_THROWS_AS(destein::sample_pairs(pairs, 101, 3), std::invalid_argument);
  CHECK_THROWS_WITH(destein::sample_pairs(pairs, 101, 3),
                    "asked for 101 pairs but the set has 100");
}

TEST_CASE("pairs: deduplication after cleaning keeps first occurrences", "[pairs]") {
  std::vector<destein::SteeringPair> pairs = {{"a", "b", {{"id", 0}}},   {"a.", "b ", {{"id", 1}}},
                                              {"a", "c", {{"id", 2}}},   {"a b", "c", {{"id", 3}}},
                                              {"a", "b c", {{"id", 4}}}, {"a", "b", {{"id", 5}}}};
  auto unique = destein::deduplicate_pairs(pairs);
  std::vector<int> ids;
  for (const auto& p : unique) ids.push_back(p.provenance["id"]);
  CHECK(ids == std::vector<int>{0, 2, 3, 4});
}

TEST_CASE("pairs: write then read gives the same pairs", "[pairs]") {
  std::vector<destein::SteeringPair> pairs = {
      {"you idiot", "you silly person", {{"source", "paradetox.tsv"}, {"row", 17}}},
      {"multi\nline \"quoted\"", "caf\xC3\xA9 \xE2\x80\x94 fine", {{"seed", 3}}}};
  fs::path p = fs::path(DESTEIN_TEST_BINARY_DIR) / "pairs_tmp" / "roundtrip.jsonl";
  fs::create_directories(p.parent_path());
  destein::write_pairs_jsonl(p, pairs);
  CHECK_FALSE(fs::exists(p.string() + ".tmp"));
  auto back = destein::load_pairs_jsonl(p);
  REQUIRE(back.size() == pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    CHECK(back[i].toxic == pairs[i].toxic);
    CHECK(back[i].nontoxic == pairs[i].nontoxic);
    CHECK(back[i].provenance == pairs[i].provenance);
  }
  CHECK(destein::pair_set_hash(back) == destein::pair_set_hash(pairs));

  CHECK_THROWS_AS(destein::write_pairs_jsonl(p, {}), std::invalid_argument);
  CHECK_THROWS_WITH(destein::write_pairs_jsonl("/nonexistent/dir/pairs.jsonl", pairs),
                    Contains("/nonexistent/dir/pairs.jsonl"));
}

TEST_CASE("pairs: the set hash is SHA-256 of the cleaned texts", "[pairs]") {
  // Expected values from Python: hashlib.sha256(b"".join(t.rstrip(" .").encode() + b"\0" ...)).hexdigest()
  CHECK(destein::pair_set_hash({}) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::vector<destein::SteeringPair> pairs = {{" Hello there. ", "hi.", {{"row", 1}}},
                                              {"you idiot", "you person", nullptr}};
  CHECK(destein::pair_set_hash(pairs) ==
        "d42dc7ffbdad48c2e42dc99f224e0534dd1905c779a47b6ebc938f75951d7029");
  // Longer than one 64-byte block, with UTF-8 and a newline.
  std::vector<destein::SteeringPair> longer = {
      {std::string(70, 'x'), "caf\xC3\xA9 \xE2\x80\x94 ok", nullptr}, {"a\nb", "c", nullptr}};
  CHECK(destein::pair_set_hash(longer) ==
        "1c962db82888a68e943aaaa54deef3a126042c5c7f084675e63d5561d8a11deb");
  // Provenance does not count; order does.
  pairs[0].provenance = {{"row", 2}};
  CHECK(destein::pair_set_hash(pairs) ==
        "d42dc7ffbdad48c2e42dc99f224e0534dd1905c779a47b6ebc938f75951d7029");
  std::swap(pairs[0], pairs[1]);
  CHECK(destein::pair_set_hash(pairs) !=
        "d42dc7ffbdad48c2e42dc99f224e0534dd1905c779a47b6ebc938f75951d7029");
}

TEST_CASE("pairs: probe groups follow the cleaned toxic text", "[pairs]") {
  std::vector<destein::SteeringPair> pairs = {{"you idiot", "you person", nullptr},
                                              {"shut up", "be quiet", nullptr},
                                              {"you idiot.", "you silly person", nullptr},
                                              {"you idiot!", "you person", nullptr},
                                              {"shut up", "please stop", nullptr}};
  CHECK(destein::pair_groups_by_toxic_text(pairs) == std::vector<int64_t>{0, 1, 0, 2, 1});
  CHECK(destein::pair_groups_by_toxic_text({}).empty());
}

// Hugging Face tokenizer.json pipelines against the Hugging Face tokenizers library itself
// (Rust, Node binding): golden files from tests/fixtures/make_hf_golden.sh for the real
// Llama 3, Qwen3 and Gemma 3 tokenizers and for small synthetic files that use the options
// the real ones leave out. Every id sequence and every decoded text must be identical.

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "destein/text/tokenizer.hpp"
#include "text/hf_regex.hpp"
#include "text/hf_tokenizer.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using Catch::Matchers::Contains;
using Ids = std::vector<int64_t>;

namespace {

const fs::path kGolden = fs::path(DESTEIN_TEST_BINARY_DIR) / "fixtures" / "hf_golden";

struct Golden {
  std::string text;
  Ids ids, ids_special;
  std::string decoded, decoded_keep, roundtrip;
};

std::vector<Golden> read_golden(const std::string& name) {
  const fs::path file = kGolden / (name + ".jsonl");
  std::ifstream in(file);
  if (!in) {
    FAIL("golden file " << file.string()
                        << " missing; run scripts/setup.sh, then tests/fixtures/make_hf_golden.sh "
                        << (kGolden.parent_path()).string()
                        << " (or ctest, whose make_fixtures step does it)");
  }
  std::vector<Golden> cases;
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line);
    cases.push_back(
        {j["text"], j["ids"], j["ids_special"], j["decoded"], j["decoded_keep"], j["roundtrip"]});
  }
  return cases;
}

fs::path tokenizer_file(const std::string& name) { return kGolden / name / "tokenizer.json"; }

// Loaded once per test program: Gemma 3's file takes seconds to parse.
const destein::HfTokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<destein::HfTokenizer>> loaded;
  auto& t = loaded[name];
  if (!t) t = destein::load_hf_tokenizer(tokenizer_file(name));
  return *t;
}

// Every golden case through the tokenizer; prints the counts, reports the first mismatch
// of each kind in full.
void check_against_library(const std::string& name, size_t min_cases) {
  const auto cases = read_golden(name);
  REQUIRE(cases.size() >= min_cases);
  const destein::HfTokenizer* t = &tokenizer(name);
  size_t ids_bad = 0, special_bad = 0, decode_bad = 0, keep_bad = 0, roundtrip_bad = 0, exact = 0;
  std::string first;
  const auto note = [&](const std::string& what, const Golden& c, const json& ours,
                        const json& theirs) {
    if (first.empty()) {
      first = what + " of " + json(c.text).dump() + ": destein " + ours.dump() + ", Hugging Face " +
              theirs.dump();
    }
  };
  for (const Golden& c : cases) {
    const Ids ids = t->encode(c.text);
    if (ids != c.ids) ++ids_bad, note("ids", c, ids, c.ids);
    const Ids special = t->encode_with_special_tokens(c.text);
    if (special != c.ids_special)
      ++special_bad, note("ids with special tokens", c, special, c.ids_special);
    const std::string decoded = t->decode(c.ids_special);
    if (decoded != c.decoded) ++decode_bad, note("decode", c, decoded, c.decoded);
    const std::string keep = t->decode(c.ids_special, false);
    if (keep != c.decoded_keep)
      ++keep_bad, note("decode keeping special tokens", c, keep, c.decoded_keep);
    const std::string back = t->decode(ids, false);
    if (back != c.roundtrip) ++roundtrip_bad, note("decode(encode(text))", c, back, c.roundtrip);
    if (back == c.text) ++exact;
  }
  std::cout << name << ": " << cases.size()
            << " texts; differing from the Hugging Face library: ids " << ids_bad
            << ", ids with special tokens " << special_bad << ", decode " << decode_bad
            << ", decode keeping special " << keep_bad << ", decode(encode(text)) " << roundtrip_bad
            << "; decode(encode(text)) == text for " << exact << "\n";
  INFO(first);
  CHECK(ids_bad == 0);
  CHECK(special_bad == 0);
  CHECK(decode_bad == 0);
  CHECK(keep_bad == 0);
  CHECK(roundtrip_bad == 0);
}

// The texts whose decode(encode(text)) is not the text, for a tokenizer that should give
// every text back but where its normalizer changes it.
template <typename Why>
void check_round_trips(const std::string& name, Why explained) {
  const destein::HfTokenizer* t = &tokenizer(name);
  size_t unexplained = 0;
  std::string first;
  for (const Golden& c : read_golden(name)) {
    const std::string back = t->decode(t->encode(c.text), false);
    if (back != c.text && !explained(c.text)) {
      if (unexplained++ == 0) first = json(c.text).dump() + " came back as " + json(back).dump();
    }
  }
  INFO(first);
  CHECK(unexplained == 0);
}

// A fresh folder under the system temp dir, removed at scope end.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("destein_hf_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A minimal valid tokenizer.json (a, b, ab; merge a b) with `patch` merged over it.
fs::path write_tokenizer(const TempDir& dir, const json& patch) {
  json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model",
       {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}}};
  root.merge_patch(patch);
  const fs::path file = dir.path() / "tokenizer.json";
  std::ofstream(file) << root.dump();
  return file;
}

std::string load_error(const json& patch) {
  TempDir dir;
  const fs::path file = write_tokenizer(dir, patch);
  try {
    destein::load_hf_tokenizer(file);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_CASE("Llama 3's tokenizer.json gives the Hugging Face library's ids and text",
          "[hf_tokenizer]") {
  check_against_library("llama3", 5000);
  // No normalizer: every text comes back, special tokens spelled in it included.
  check_round_trips("llama3", [](const std::string&) { return false; });
}

TEST_CASE("Qwen3's tokenizer.json gives the Hugging Face library's ids and text",
          "[hf_tokenizer]") {
  check_against_library("qwen3", 5000);
}

TEST_CASE("Gemma 3's tokenizer.json gives the Hugging Face library's ids and text",
          "[hf_tokenizer]") {
  check_against_library("gemma3", 5000);
  // Its normalizer writes spaces as U+2581, which decodes to a space: only a text holding
  // U+2581 itself comes back changed.
  check_round_trips(
      "gemma3", [](const std::string& text) { return text.find("\u2581") != std::string::npos; });
}

TEST_CASE("synthetic tokenizer.json files give the Hugging Face library's ids and text",
          "[hf_tokenizer]") {
  for (const char* name : {"syn_llama2", "syn_metaspace_first", "syn_metaspace_always",
                           "syn_split_behaviors", "syn_bytelevel", "syn_regex", "syn_affixes"}) {
    SECTION(name) { check_against_library(name, 700); }
  }
}

TEST_CASE("tokenizer.json: BOS, EOS and the factory", "[hf_tokenizer]") {
  // Gemma 3: the post-processor puts <bos> (2) first; tokenizer_config.json's eos_token
  // is <end_of_turn>.
  const destein::HfTokenizer* gemma = &tokenizer("gemma3");
  CHECK(gemma->kind() == "hf-bpe");
  CHECK(gemma->prepend_bos());
  CHECK(gemma->bos_id() == 2);
  CHECK(gemma->eos_id() == gemma->token_id("<end_of_turn>"));
  CHECK(gemma->encode_prompt("Hi") == gemma->encode_with_special_tokens("Hi"));
  CHECK(gemma->vocab_size() == 262145);  // 262144 model tokens and <image_soft_token>

  // This Llama 3 file's post-processor is ByteLevel (it adds nothing): no BOS in prompts;
  // the config names <|begin_of_text|> and <|end_of_text|>.
  const destein::HfTokenizer* llama = &tokenizer("llama3");
  CHECK_FALSE(llama->prepend_bos());
  CHECK(llama->bos_id() == 128000);
  CHECK(llama->eos_id() == 128001);
  CHECK(llama->token_id("<|eot_id|>") == 128009);

  // load_tokenizer takes a file or a folder holding tokenizer.json.
  const destein::HfTokenizer* qwen = &tokenizer("qwen3");
  for (const fs::path& path : {tokenizer_file("qwen3"), tokenizer_file("qwen3").parent_path()}) {
    const auto t = destein::load_tokenizer(path);
    CHECK(t->kind() == "hf-bpe");
    CHECK(t->encode("Hello, world! <|im_start|>") == qwen->encode("Hello, world! <|im_start|>"));
  }
  CHECK(qwen->eos_id() == qwen->token_id("<|im_end|>"));
  CHECK_FALSE(qwen->prepend_bos());
}

TEST_CASE("tokenizer.json decode rejects ids no token has", "[hf_tokenizer]") {
  const destein::HfTokenizer* t = &tokenizer("llama3");
  CHECK_THROWS_WITH(t->decode({1, -1}), Contains("token id -1"));
  CHECK_THROWS_WITH(t->decode({t->vocab_size()}), Contains("not in the vocabulary"));
}

TEST_CASE("tokenizer.json: ill-formed UTF-8 is encoded as U+FFFD, as the library sees it",
          "[hf_tokenizer]") {
  const auto t = destein::load_hf_tokenizer(tokenizer_file("llama3"));
  CHECK(t->encode("a\xff"
                  "b") == t->encode("a\xEF\xBF\xBD"
                                    "b"));
}

TEST_CASE("tokenizer.json gives the same ids from several threads", "[hf_tokenizer]") {
  const destein::HfTokenizer* t = &tokenizer("gemma3");
  const auto cases = read_golden("gemma3");
  std::vector<size_t> bad(4, 0);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < bad.size(); ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = k; i < cases.size(); i += 2) {
        if (t->encode(cases[i].text) != cases[i].ids) ++bad[k];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t b : bad) CHECK(b == 0);
}

TEST_CASE("tokenizer.json components and options that are not reproduced are refused by name",
          "[hf_tokenizer]") {
  CHECK_THAT(load_error({{"model", {{"type", "WordPiece"}}}}),
             Contains("model type \"WordPiece\""));
  CHECK_THAT(load_error({{"model", {{"type", "Unigram"}}}}), Contains("model type \"Unigram\""));
  CHECK_THAT(load_error({{"model", {{"dropout", 0.1}}}}), Contains("BPE dropout"));
  CHECK_THAT(load_error({{"normalizer", {{"type", "Lowercase"}}}}),
             Contains("normalizer type \"Lowercase\""));
  CHECK_THAT(
      load_error({{"normalizer", {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}}}}),
      Contains("normalizer type \"Precompiled\""));
  CHECK_THAT(load_error({{"pre_tokenizer", {{"type", "Whitespace"}}}}),
             Contains("pre-tokenizer type \"Whitespace\""));
  CHECK_THAT(
      load_error(
          {{"pre_tokenizer",
            {{"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "ByteLevel"}}, {{"type", "Digits"}, {"individual_digits", true}}}}}}}),
      Contains("pre_tokenizer.pretokenizers[1]: pre-tokenizer type \"Digits\""));
  CHECK_THAT(load_error({{"decoder", {{"type", "WordPiece"}}}}),
             Contains("decoder type \"WordPiece\""));
  CHECK_THAT(load_error({{"post_processor", {{"type", "Something"}}}}),
             Contains("post-processor type \"Something\""));
  CHECK_THAT(load_error({{"truncation", {{"max_length", 8}}}}), Contains("\"truncation\""));
  CHECK_THAT(load_error({{"padding", {{"strategy", "BatchLongest"}}}}), Contains("\"padding\""));
  // An option the Split pre-tokenizer does not have (a newer library's) could change ids.
  CHECK_THAT(load_error({{"pre_tokenizer",
                          {{"type", "Split"},
                           {"pattern", {{"String", " "}}},
                           {"behavior", "Isolated"},
                           {"invert", false},
                           {"max_splits", 2}}}}),
             Contains("option \"max_splits\""));
  // Metaspace "first" is exact only as the first step, with no Prepend normalizer.
  CHECK_THAT(load_error({{"pre_tokenizer",
                          {{"type", "Sequence"},
                           {"pretokenizers",
                            {{{"type", "Split"},
                              {"pattern", {{"String", "x"}}},
                              {"behavior", "Isolated"},
                              {"invert", false}},
                             {{"type", "Metaspace"},
                              {"replacement", "\u2581"},
                              {"prepend_scheme", "first"},
                              {"split", true}}}}}}}),
             Contains("prepend_scheme \"first\""));
  const auto split = [](const std::string& regex) {
    return load_error({{"pre_tokenizer",
                        {{"type", "Split"},
                         {"pattern", {{"Regex", regex}}},
                         {"behavior", "Isolated"},
                         {"invert", false}}}});
  };
  CHECK_THAT(split(R"(\w+)"), Contains("the escape \\w"));
  CHECK_THAT(split(R"(\bx)"), Contains("the escape \\b"));
  CHECK_THAT(split(R"(\d+)"), Contains("the escape \\d"));
  CHECK_THAT(split(R"(\h)"), Contains("the escape \\h"));
  CHECK_THAT(split(R"((?m:.)+)"), Contains("inline option 'm'"));
  CHECK_THAT(split(R"([[:alpha:]])"), Contains("nested class or POSIX bracket"));
  CHECK_THAT(split(R"([a-z&&[^aeiou]])"), Contains("class intersection"));
  CHECK_THAT(split(R"((?i:ss))"), Contains("multi-character case folds"));
  CHECK_THAT(split(R"((?i:é))"), Contains("multi-character case folds"));
  CHECK_THAT(split(R"((unclosed)"), Contains("does not compile"));
  // Malformed files name the key.
  CHECK_THAT(load_error({{"model", {{"merges", {"a b c"}}}}}), Contains("model.merges[0]"));
  CHECK_THAT(load_error({{"model", {{"merges", {"a x"}}}}}), Contains("not in the vocabulary"));
  CHECK_THAT(load_error({{"added_tokens", {{{"id", 0}, {"content", "b"}}}}}),
             Contains("model vocabulary gives it id 1"));
  CHECK_THAT(
      load_error({{"pre_tokenizer",
                   {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}}}}),
      Contains("pre_tokenizer.behavior: \"Sideways\""));
}

TEST_CASE("a Split regex that matches the empty string is refused when it does", "[hf_tokenizer]") {
  TempDir dir;
  const fs::path file = write_tokenizer(dir, {{"pre_tokenizer",
                                               {{"type", "Split"},
                                                {"pattern", {{"Regex", "b*"}}},
                                                {"behavior", "Isolated"},
                                                {"invert", false}}}});
  const auto t = destein::load_hf_tokenizer(file);
  CHECK(t->encode("bb") == Ids{1, 1});  // no merge (b, b): the match "bb" is one piece of two ids
  CHECK_THROWS_WITH(t->encode("ab"), Contains("matched the empty string"));
}

TEST_CASE("Oniguruma patterns keep their meaning in PCRE2", "[hf_tokenizer]") {
  using destein::text_detail::HfPattern;
  using destein::text_detail::onig_to_pcre2;
  CHECK(onig_to_pcre2(R"(\s+(?!\S))", "t") == R"(\p{White_Space}+(?!\P{White_Space}))");
  CHECK(onig_to_pcre2(R"([^\s\p{L}]\u00e9\v)", "t") == R"([^\p{White_Space}\p{L}]\x{00e9}\x{0B})");
  // Oniguruma's \s has U+0085 (NEL), PCRE2's does not; ^ and $ are line anchors.
  const auto ws = HfPattern::regex(R"(\s+)", "t");
  CHECK(ws.find_all("a\u0085b") == std::vector<std::pair<size_t, size_t>>{{1, 3}});
  const auto line = HfPattern::regex(R"(^x)", "t");
  CHECK(line.find_all("x\nx") == std::vector<std::pair<size_t, size_t>>{{0, 1}, {2, 3}});
  // (?i) folds ſ (U+017F) to s, as Oniguruma does.
  const auto contraction = HfPattern::regex(R"((?i:'s))", "t");
  CHECK(contraction.find_all("it'\u017f") == std::vector<std::pair<size_t, size_t>>{{2, 5}});
}

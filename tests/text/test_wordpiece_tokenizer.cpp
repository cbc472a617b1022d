// WordPiece (BERT) tokenization against the Hugging Face tokenizers library: the ids it gave
// the tokenizer texts of tests/fixtures/make_encoders.py (642: RealToxicityPrompts prompts and edge
// cases: accents, CJK, control characters, spelled special tokens, words over 100
// characters), for the vocab.txt and tokenizer.json forms of three normalizer settings.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/file_io.hpp"
#include "text/wordpiece_tokenizer.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const fs::path kEncoders = fs::path(DESTEIN_TEST_BINARY_DIR) / "fixtures" / "encoders";

// Every text's ids equal the library's; the first mismatch is reported whole.
void require_hf_ids(const destein::Tokenizer& tok, const std::string& folder) {
  const auto texts = destein::read_json_file(kEncoders / "texts.json")["tokenizer_texts"];
  const auto golden = destein::read_json_file(kEncoders / folder / "hf_ids.json")["ids"];
  REQUIRE(texts.size() == golden.size());
  size_t equal = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto ids = tok.encode(texts[i].get<std::string>());
    const auto want = golden[i].get<std::vector<int64_t>>();
    if (ids != want) {
      FAIL_CHECK(folder << " text " << i << " " << texts[i].dump() << "\n  ours "
                        << nlohmann::json(ids).dump() << "\n  hf   "
                        << nlohmann::json(want).dump());
    } else {
      ++equal;
    }
  }
  CHECK(equal == texts.size());
}

}  // namespace

TEST_CASE("WordPiece ids equal the Hugging Face library's, vocab.txt and tokenizer.json forms",
          "[wordpiece][tokenizer]") {
  // bert: lower-cased, accents stripped; distilbert: cased; wordpiece-accents: lower-cased
  // with strip_accents false.
  for (const std::string folder : {"bert", "distilbert", "wordpiece-accents"}) {
    DYNAMIC_SECTION(folder << " vocab.txt") {
      auto tok = destein::load_wordpiece_tokenizer(kEncoders / folder / "vocab.txt");
      require_hf_ids(*tok, folder);
    }
    DYNAMIC_SECTION(folder << " tokenizer.json") {
      auto tok = destein::load_wordpiece_tokenizer(kEncoders / folder / "tokenizer.json");
      require_hf_ids(*tok, folder);
    }
  }
  auto cased = destein::load_wordpiece_tokenizer(kEncoders / "distilbert");
  CHECK_FALSE(cased->options().lowercase);
  auto accents = destein::load_wordpiece_tokenizer(kEncoders / "wordpiece-accents" / "vocab.txt");
  CHECK(accents->options().lowercase);
  CHECK(accents->options().strip_accents == std::optional<bool>(false));
}

TEST_CASE("WordPiece decode glues ## pieces and leaves special tokens out",
          "[wordpiece][tokenizer]") {
  auto tok = destein::load_wordpiece_tokenizer(kEncoders / "bert");
  const auto cls = tok->token_id("[CLS]"), sep = tok->token_id("[SEP]");
  REQUIRE(cls);
  REQUIRE(sep);
  auto ids = tok->encode("the people said");
  ids.insert(ids.begin(), *cls);
  ids.push_back(*sep);
  CHECK(tok->decode(ids) == "the people said");
  CHECK_THROWS_WITH(tok->decode({tok->vocab_size()}), Contains("outside"));
}

TEST_CASE("WordPiece loading errors name the file and what was expected",
          "[wordpiece][tokenizer]") {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "tmp" / "wordpiece_errors";
  fs::remove_all(dir);
  fs::create_directories(dir);
  CHECK_THROWS_WITH(destein::load_wordpiece_tokenizer(dir),
                    Contains(dir.string()) && Contains("vocab.txt"));

  auto root = destein::read_json_file(kEncoders / "bert" / "tokenizer.json");
  root["normalizer"] = {{"type", "NFKC"}};
  std::ofstream(dir / "tokenizer.json") << root.dump();
  CHECK_THROWS_WITH(destein::load_wordpiece_tokenizer(dir / "tokenizer.json"),
                    Contains("tokenizer.json") && Contains("NFKC") && Contains("BertNormalizer"));

  root = destein::read_json_file(kEncoders / "bert" / "tokenizer.json");
  root["model"]["unk_token"] = "<unk>";
  std::ofstream(dir / "tokenizer.json") << root.dump();
  CHECK_THROWS_WITH(destein::load_wordpiece_tokenizer(dir / "tokenizer.json"),
                    Contains("tokenizer.json") && Contains("unk_token '<unk>'"));
}

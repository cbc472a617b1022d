// `destein tokenize` against the Hugging Face tokenizers library: the golden files of
// tests/fixtures/make_hf_golden.sh (real Llama 3, Qwen3 and Gemma 3 tokenizers) fed through
// the command line, every output line compared.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::run_command;
using json = nlohmann::json;

namespace {

std::vector<json> read_lines(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<json> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

// Writes `key` of every golden line as one JSON value per line, runs `destein tokenize
// ARGS` on it and returns the output lines.
std::vector<json> run_tokenize(const std::vector<json>& golden, const char* key,
                               const std::string& args, const std::string& name) {
  const auto dir = destein::test::temp_dir("cli_tokenize_" + name);
  {
    std::ofstream in(dir / "in.jsonl");
    for (const json& g : golden) in << g[key].dump() << '\n';
  }
  const auto r = run_command(std::string(DESTEIN_CLI) + " tokenize " + args + " < " +
                             (dir / "in.jsonl").string() + " > " + (dir / "out.jsonl").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return read_lines(dir / "out.jsonl");
}

}  // namespace

TEST_CASE("destein tokenize gives the Hugging Face library's ids for the real tokenizers",
          "[cli][hf_tokenizer]") {
  for (const char* name : {"llama3", "qwen3", "gemma3"}) {
    SECTION(name) {
      const auto golden = read_lines(fixture("hf_golden") / (std::string(name) + ".jsonl"));
      REQUIRE(golden.size() >= 5000);
      const std::string folder = (fixture("hf_golden") / name).string();
      // A model folder, without special tokens.
      const auto ids = run_tokenize(golden, "text", "--tokenizer " + folder, name);
      REQUIRE(ids.size() == golden.size());
      size_t bad = 0;
      for (size_t i = 0; i < golden.size(); ++i) bad += ids[i] != golden[i]["ids"];
      CHECK(bad == 0);
      // The file itself, with the post-processor's special tokens.
      const auto special = run_tokenize(
          golden, "text", "--tokenizer " + folder + "/tokenizer.json --add-special-tokens", name);
      REQUIRE(special.size() == golden.size());
      bad = 0;
      for (size_t i = 0; i < golden.size(); ++i) bad += special[i] != golden[i]["ids_special"];
      CHECK(bad == 0);
      // And back, without and with the special tokens.
      const auto text =
          run_tokenize(golden, "ids_special", "--tokenizer " + folder + " --decode", name);
      const auto keep = run_tokenize(
          golden, "ids_special", "--tokenizer " + folder + " --decode --keep-special-tokens", name);
      REQUIRE(text.size() == golden.size());
      REQUIRE(keep.size() == golden.size());
      size_t bad_text = 0, bad_keep = 0;
      for (size_t i = 0; i < golden.size(); ++i) {
        bad_text += text[i] != golden[i]["decoded"];
        bad_keep += keep[i] != golden[i]["decoded_keep"];
      }
      CHECK(bad_text == 0);
      CHECK(bad_keep == 0);
    }
  }
}

TEST_CASE("destein tokenize names the input line it cannot read", "[cli][hf_tokenizer]") {
  const auto dir = destein::test::temp_dir("cli_tokenize_errors");
  std::ofstream(dir / "bad.jsonl") << "\"fine\"\n[1, 2]\n";
  const std::string cli = std::string(DESTEIN_CLI) + " tokenize --tokenizer " +
                          (fixture("hf_golden") / "llama3").string();
  const auto r = run_command(cli + " < " + (dir / "bad.jsonl").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("standard input line 2: expected a JSON string"));
  const auto d = run_command(cli + " --decode < " + (dir / "bad.jsonl").string());
  CHECK(d.exit_code == 1);
  CHECK_THAT(d.output, Contains("standard input line 1: expected a JSON array of token ids"));
  const auto missing = run_command(std::string(DESTEIN_CLI) + " tokenize --tokenizer " +
                                   (dir / "nothing").string() + " < /dev/null");
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.output, Contains("does not exist"));
}

// A generations file judged again by another scorer: every score replaced from the new
// scorer, everything else kept, the old scorer's other attributes dropped.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/rescoring.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path rescore_dir() {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "rescoring_tmp";
  fs::create_directories(dir);
  return dir;
}

fs::path write_file(const std::string& name, const std::string& content) {
  const fs::path p = rescore_dir() / name;
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

std::vector<nlohmann::json> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Rates toxicity as the text's length / 10 and "insult" as 1 - that; no score for "?".
class LengthScorer : public destein::ToxicityScorer {
 public:
  std::vector<std::optional<double>> score(const std::vector<std::string>& texts) override {
    std::vector<std::optional<double>> out;
    for (const auto& t : texts)
      out.push_back(t == "?" ? std::nullopt : std::optional<double>(t.size() / 10.0));
    return out;
  }
  std::string name() const override { return "length"; }
  std::vector<std::string> attributes() const override { return {"toxicity", "insult"}; }
  std::vector<std::vector<std::optional<double>>> score_attributes(
      const std::vector<std::string>& texts) override {
    std::vector<std::vector<std::optional<double>>> out;
    for (const auto& s : score(texts))
      out.push_back({s, s ? std::optional<double>(1.0 - *s) : std::nullopt});
    return out;
  }
};

const char* kRun =
    R"({"prompt": {"text": "A"}, "prompt_index": 4, "method": "base", "generations": [)"
    R"({"text": "abcd", "tokens": 2, "toxicity": 0.9, "profanity": 0.8, "insult": 0.7, "perplexity": 12.5},)"
    R"({"text": "?", "tokens": 1, "toxicity": 0.1, "perplexity": null}]})"
    "\n"
    R"({"prompt": {"text": "B"}, "prompt_index": 7, "method": "base", "generations": [{"text": "ab", "toxicity": 0.2}]})"
    "\n";

}  // namespace

TEST_CASE("rescoring replaces every score from the new scorer and keeps the rest",
          "[eval][rescore]") {
  const fs::path in = write_file("run.jsonl", kRun), out = rescore_dir() / "rescored.jsonl";
  fs::remove(out);
  LengthScorer scorer;
  const auto report = destein::rescore_generations(in, out, scorer);
  CHECK(report.prompts == 2);
  CHECK(report.generations == 3);
  CHECK(report.unscored == 1);
  const auto lines = read_lines(out);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["prompt_index"] == 4);
  CHECK(lines[0]["scorer"] == "length");
  const auto& g = lines[0]["generations"];
  CHECK(g[0]["text"] == "abcd");
  CHECK(g[0]["tokens"] == 2);
  CHECK(g[0]["perplexity"].get<double>() == 12.5);
  CHECK(g[0]["toxicity"].get<double>() == Approx(0.4));
  CHECK(g[0]["insult"].get<double>() == Approx(0.6));
  CHECK_FALSE(g[0].contains("profanity"));  // the old scorer's; the new one does not rate it
  CHECK(g[1]["toxicity"].is_null());
  CHECK(g[1]["insult"].is_null());
  CHECK(g[1]["perplexity"].is_null());
  CHECK(lines[1]["generations"][0]["toxicity"].get<double>() == Approx(0.2));
  CHECK_FALSE(fs::exists(out.string() + ".tmp"));
}

TEST_CASE("rescoring refuses to overwrite its input and names a bad line", "[eval][rescore]") {
  LengthScorer scorer;
  const fs::path in = write_file("run2.jsonl", kRun);
  CHECK_THROWS_WITH(destein::rescore_generations(in, in, scorer),
                    Contains("must not overwrite its input"));
  const fs::path bad =
      write_file("bad.jsonl", std::string(kRun) + R"({"prompt": {"text": "C"}})" + "\n");
  CHECK_THROWS_WITH(destein::rescore_generations(bad, rescore_dir() / "bad.out.jsonl", scorer),
                    Contains("bad.jsonl:3") && Contains("generations"));
  // The two good lines before the bad one were written to the temporary file: it is gone,
  // and no output appeared under the final name.
  CHECK_FALSE(fs::exists(rescore_dir() / "bad.out.jsonl"));
  CHECK_FALSE(fs::exists(rescore_dir() / "bad.out.jsonl.tmp"));
  const fs::path no_text = write_file("notext.jsonl", R"({"generations": [{"toxicity": 0.3}]})"
                                                      "\n");
  CHECK_THROWS_WITH(
      destein::rescore_generations(no_text, rescore_dir() / "notext.out.jsonl", scorer),
      Contains("notext.jsonl:1") && Contains("without \"text\""));
}

// `destein score` and `destein eval-scorer` with scorer v2 (eight attributes) and v1.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>

#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "io/csv.hpp"
#include "io/data_folder.hpp"
#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::run_command;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> read_lines(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

const std::vector<std::string> kTexts = {"you are a stupid fucking idiot",
                                         "Thank you, have a nice day.", "",
                                         "I will hurt you and your whole family."};

}  // namespace

TEST_CASE("destein score writes the eight attributes (v2) or toxicity alone (v1)",
          "[cli][scorer]") {
  const auto dir = destein::test::temp_dir("cli_score");
  {
    std::ofstream in(dir / "in.jsonl");
    for (size_t i = 0; i < kTexts.size(); ++i) {
      nlohmann::json j = i % 2 ? nlohmann::json{{"prompt", {{"text", kTexts[i]}}}}
                               : nlohmann::json{{"text", kTexts[i]}};
      in << j.dump() << "\n";
    }
  }
  const std::string cli =
      std::string(DESTEIN_CLI) + " score --input " + (dir / "in.jsonl").string();
  auto r = run_command(cli + " --output " + (dir / "v2.jsonl").string());
  REQUIRE(r.exit_code == 0);
  const auto v2 = destein::AttributeScorer::load(destein::default_scorer_path());
  auto lines = read_lines(dir / "v2.jsonl");
  REQUIRE(lines.size() == kTexts.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    CHECK(lines[i]["text"] == kTexts[i]);
    CHECK(lines[i].size() == 9);  // text + eight attributes, top-level
    const auto p = v2.probabilities(kTexts[i]);
    for (int a = 0; a < destein::kNumAttributes; ++a) {
      const auto& name = destein::perspective_attributes()[static_cast<size_t>(a)];
      REQUIRE(lines[i].contains(name));
      CHECK(lines[i][name].get<double>() == Approx(p[static_cast<size_t>(a)]).epsilon(1e-12));
    }
  }
  CHECK(lines[0]["profanity"].get<double>() > 0.5);
  CHECK(lines[1]["toxicity"].get<double>() < 0.2);

  const fs::path v1_path =
      fs::path(DESTEIN_SOURCE_DIR) / "models/scorer/toxicity-linear-v1.safetensors";
  r = run_command(cli + " --output " + (dir / "v1.jsonl").string() + " --scorer " +
                  v1_path.string());
  REQUIRE(r.exit_code == 0);
  const auto v1 = destein::LinearScorer::load(v1_path);
  lines = read_lines(dir / "v1.jsonl");
  REQUIRE(lines.size() == kTexts.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    CHECK(lines[i].size() == 2);
    CHECK(lines[i]["toxicity"].get<double>() == Approx(v1.probability(kTexts[i])).epsilon(1e-12));
  }

  std::ofstream(dir / "bad.jsonl") << "{\"text\": \"fine\"}\n{\"txt\": 3}\n";
  r = run_command(std::string(DESTEIN_CLI) + " score --input " + (dir / "bad.jsonl").string() +
                  " --output " + (dir / "out.jsonl").string());
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("bad.jsonl:2"));
  std::ofstream(dir / "junk.safetensors") << "not a model at all, just some bytes";
  r = run_command(cli + " --output " + (dir / "out.jsonl").string() + " --scorer " +
                  (dir / "junk.safetensors").string());
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("junk.safetensors") && Contains("not a scorer file"));
}

TEST_CASE("destein eval-scorer: per-system agreement on the DExperts file", "[cli][scorer][data]") {
  const fs::path data = destein::resolve_data_dir("");
  const fs::path csv = data / "rtp/extra/dexperts_human_eval_toxicity.csv";
  if (!fs::exists(csv)) {
    WARN("data not found, skipped: " << data);
    return;
  }
  const auto dir = destein::test::temp_dir("cli_eval_scorer");
  auto r = run_command(std::string(DESTEIN_CLI) +
                       " eval-scorer --sets none --rtp dexperts,100 --output " +
                       (dir / "report.json").string());
  REQUIRE(r.exit_code == 0);
  nlohmann::json report;
  std::ifstream(dir / "report.json") >> report;
  const auto& dx = report["rtp"]["dexperts"];
  // Independent of the agreement code: Perspective's mean per system over its distinct
  // continuations, straight from the CSV.
  std::map<std::string, std::pair<double, int>> mean;
  std::set<std::pair<std::string, std::string>> seen;
  auto reader = destein::CsvReader::open(csv);
  reader.read_header();
  destein::CsvRecord rec;
  while (reader.next(rec)) {
    for (const char* side : {"a", "b"}) {
      const std::string& tox = rec.fields[reader.column(std::string("tox") + side)];
      const std::string& sys = rec.fields[reader.column(std::string("source") + side)];
      const std::string& text = rec.fields[reader.column(std::string("sent") + side)];
      if (tox.empty() || !seen.insert({sys, text}).second) continue;
      mean[sys].first += std::stod(tox);
      mean[sys].second += 1;
    }
  }
  REQUIRE(mean.size() == 5);
  REQUIRE(dx["systems"].size() == 5);
  for (const auto& [sys, m] : mean) {
    INFO(sys);
    CHECK(dx["systems"][sys]["continuations"].get<int>() == m.second);
    CHECK(dx["systems"][sys]["perspective_mean"].get<double>() ==
          Approx(m.first / m.second).epsilon(1e-12));
  }
  CHECK(dx["perspective_rank"].size() == 5);
  CHECK(dx["continuations"].get<int>() == 1191);
  const auto& r100 = report["rtp"]["100"];
  CHECK(r100["prompts"].get<int>() == 100);
  CHECK(r100["attributes"].size() == 8);
  CHECK(r100["attributes"]["threat"]["pearson"].get<double>() > 0.5);
}

// `destein score --scorer DIR` and `destein-bench rescore --scorer DIR` with the tiny
// Hugging Face classifier folders of tests/fixtures/make_encoders.py.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "destein/eval/metrics.hpp"
#include "io/file_io.hpp"
#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::run_command;
namespace fs = std::filesystem;

namespace {

const fs::path kEncoders = destein::test::fixture("encoders");

std::vector<nlohmann::json> read_lines(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The first `n` classifier texts as input lines, alternately {"text"} and {"prompt": {"text"}},
// each with an extra key that must survive.
fs::path write_input(const fs::path& dir, size_t n) {
  const auto texts = destein::read_json_file(kEncoders / "texts.json")["texts"];
  std::ofstream in(dir / "in.jsonl");
  for (size_t i = 0; i < n; ++i) {
    nlohmann::json j = i % 2 ? nlohmann::json{{"prompt", {{"text", texts[i]}}}}
                             : nlohmann::json{{"text", texts[i]}};
    j["id"] = i;
    in << j.dump() << "\n";
  }
  return dir / "in.jsonl";
}

}  // namespace

TEST_CASE(
    "destein score with a classifier folder keeps each line and adds toxicity and every label's "
    "score",
    "[cli][hf-classifier]") {
  const auto dir = destein::test::temp_dir("cli_hf_score");
  const size_t n = 12;
  const fs::path input = write_input(dir, n);
  const std::string cli = std::string(DESTEIN_CLI) + " score --input " + input.string();
  for (const std::string name : {"bert", "roberta", "distilbert", "deberta-v3"}) {
    const auto ref = destein::read_json_file(kEncoders / name / "reference.json");
    const auto labels = ref["labels"].get<std::vector<std::string>>();
    const fs::path out = dir / (name + ".jsonl");
    auto r = run_command(cli + " --scorer " + (kEncoders / name).string() + " --output " +
                         out.string() + " --batch 5 --forward-batch 3");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const auto lines = read_lines(out);
    REQUIRE(lines.size() == n);
    const size_t toxic = name == "bert" ? 0 : 1;  // toxic, toxic, TOXICITY, toxic
    for (size_t i = 0; i < n; ++i) {
      CHECK(lines[i]["id"] == i);
      CHECK((lines[i].contains("text") || lines[i].contains("prompt")));
      REQUIRE(lines[i]["scores"].size() == labels.size());
      for (size_t c = 0; c < labels.size(); ++c) {
        CHECK(std::abs(lines[i]["scores"][labels[c]].get<double>() -
                       ref["probabilities"][i][c].get<double>()) < 1e-4);
      }
      CHECK(lines[i]["toxicity"] == lines[i]["scores"][labels[toxic]]);
    }
  }
  auto r = run_command(cli + " --scorer " + (kEncoders / "bert").string() + " --output " +
                       (dir / "insult.jsonl").string() + " --label insult");
  REQUIRE(r.exit_code == 0);
  for (const auto& line : read_lines(dir / "insult.jsonl"))
    CHECK(line["toxicity"] == line["scores"]["insult"]);
}

TEST_CASE(
    "destein score with a broken classifier folder names the file and the key and writes nothing",
    "[cli][hf-classifier]") {
  const auto dir = destein::test::temp_dir("cli_hf_errors");
  const fs::path input = write_input(dir, 3), out = dir / "out.jsonl";
  const std::string cli =
      std::string(DESTEIN_CLI) + " score --input " + input.string() + " --output " + out.string();

  auto r = run_command(cli + " --scorer " + (kEncoders / "bert").string() + " --label hate");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("config.json") && Contains("\"hate\"") &&
                           Contains("toxic, severe_toxic, obscene, insult"));
  CHECK_FALSE(fs::exists(out));

  const fs::path broken = dir / "electra";
  fs::create_directories(broken);
  for (const auto& e : fs::directory_iterator(kEncoders / "bert"))
    fs::copy(e.path(), broken / e.path().filename());
  auto config = destein::read_json_file(broken / "config.json");
  config["model_type"] = "electra";
  std::ofstream(broken / "config.json") << config.dump();
  r = run_command(cli + " --scorer " + broken.string());
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains((broken / "config.json").string()) && Contains("model_type") &&
                           Contains("electra"));
  CHECK_FALSE(fs::exists(out));

  r = run_command(cli + " --label toxic");  // the default scorer is a file, not a folder
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("--label"));
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("destein-bench rescore takes a classifier folder", "[cli][hf-classifier]") {
  const auto dir = destein::test::temp_dir("cli_hf_rescore");
  const auto texts = destein::read_json_file(kEncoders / "texts.json")["texts"];
  {
    std::ofstream f(dir / "run.generations.jsonl");
    for (int p = 0; p < 2; ++p) {
      nlohmann::json line = {
          {"prompt", {{"text", "prompt"}}}, {"prompt_index", p}, {"method", "base"}};
      line["generations"] = {{{"text", texts[20 + 2 * p]}, {"toxicity", 0.5}},
                             {{"text", texts[21 + 2 * p]}, {"toxicity", 0.5}}};
      f << line.dump() << "\n";
    }
  }
  const fs::path out = dir / "rescored.jsonl";
  auto r = run_command(std::string(DESTEIN_BENCH) + " rescore --generations " +
                       (dir / "run.generations.jsonl").string() + " --scorer " +
                       (kEncoders / "roberta").string() + " --output " + out.string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto ref = destein::read_json_file(kEncoders / "roberta" / "reference.json");
  const auto lines = read_lines(out);
  REQUIRE(lines.size() == 2);
  for (int p = 0; p < 2; ++p) {
    for (int g = 0; g < 2; ++g) {
      const double want = ref["probabilities"][20 + 2 * p + g][1].get<double>();
      CHECK(std::abs(lines[p]["generations"][g]["toxicity"].get<double>() - want) < 1e-4);
    }
  }
  CHECK_THAT(lines[0]["scorer"].get<std::string>(), Contains("hf-classifier"));
}

TEST_CASE(
    "destein-bench rescore with several scorers, classifier folders among them: a folder each and "
    "their agreement",
    "[cli][hf-classifier]") {
  const auto dir = destein::test::temp_dir("cli_hf_rescore_several");
  const auto texts = destein::read_json_file(kEncoders / "texts.json")["texts"];
  // Three "methods" of one run, each two prompts x two generations of other texts.
  for (int m = 0; m < 3; ++m) {
    fs::create_directories(dir / "run" / ("method" + std::to_string(m)));
    std::ofstream f(dir / "run" / ("method" + std::to_string(m)) / "toxic.generations.jsonl");
    for (int p = 0; p < 2; ++p) {
      nlohmann::json line = {
          {"prompt", {{"text", "prompt"}}}, {"prompt_index", p}, {"method", "m"}};
      const int t = 16 + 8 * m + 4 * p;
      line["generations"] = {{{"text", texts[t]}, {"toxicity", 0.5}},
                             {{"text", texts[t + 1]}, {"toxicity", 0.5}}};
      f << line.dump() << "\n";
    }
  }
  const std::vector<std::string> folders = {"roberta", "deberta-v3", "distilbert"};
  std::string list;
  for (const auto& f : folders) list += (list.empty() ? "" : ",") + (kEncoders / f).string();
  auto r = run_command(std::string(DESTEIN_BENCH) + " rescore --run " + (dir / "run").string() +
                       " --scorer " + list + " --output " + (dir / "out").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  // EMT per scorer and file from the written files, then Spearman's rho per pair as printed.
  std::vector<std::vector<double>> emt(folders.size());
  for (size_t s = 0; s < folders.size(); ++s) {
    for (int m = 0; m < 3; ++m) {
      const fs::path out = dir / "out" / ("scorer" + std::to_string(s + 1)) /
                           ("method" + std::to_string(m)) / "toxic.generations.jsonl";
      REQUIRE(fs::exists(out));
      double sum = 0;
      for (const auto& line : read_lines(out)) {
        double worst = 0;
        for (const auto& g : line["generations"])
          worst = std::max(worst, g["toxicity"].get<double>());
        sum += worst;
      }
      emt[s].push_back(sum / 2);
    }
  }
  CHECK_THAT(r.output, Contains("## Agreement between scorers") && Contains("over 3 files"));
  for (size_t a = 0; a < folders.size(); ++a) {
    for (size_t b = a + 1; b < folders.size(); ++b) {
      const double rho = destein::spearman_rank_correlation(emt[a], emt[b]);
      const std::string row = "| scorer" + std::to_string(a + 1) + " ";
      CHECK_THAT(r.output, Contains(row) && Contains(fmt::format("| {:.3f} |", rho)));
    }
  }
  // A bad scorer among them: nothing is written.
  r = run_command(std::string(DESTEIN_BENCH) + " rescore --run " + (dir / "run").string() +
                  " --scorer " + (kEncoders / "roberta").string() + "," +
                  (kEncoders / "missing").string() + " --output " + (dir / "out2").string());
  CHECK(r.exit_code != 0);
  CHECK_FALSE(fs::exists(dir / "out2"));
}

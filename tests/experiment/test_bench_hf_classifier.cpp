// A bench experiment scored by a Hugging Face classifier folder: `scorer: {kind:
// hf-classifier, path, label}` from YAML, every generation's toxicity the label's
// probability, and the schema's errors.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "destein/experiment/bench_experiment.hpp"
#include "destein/score/hf_classifier.hpp"
#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::fixture;
namespace fs = std::filesystem;

TEST_CASE("a bench experiment scores its generations with an hf-classifier",
          "[experiment][hf-classifier]") {
  const auto dir = destein::test::temp_dir("experiment_bench_hf");
  {
    std::ofstream prompts(dir / "prompts.jsonl");
    const char* texts[] = {"You are such a", "The weather today is"};
    for (int i = 0; i < 2; ++i)
      prompts << nlohmann::json{{"prompt", {{"text", texts[i]}, {"toxicity", 0.9}}}}.dump() << "\n";
  }
  const fs::path folder = fixture("encoders") / "bert";
  auto write_config = [&](const std::string& scorer) {
    std::ofstream cfg(dir / "bench.yaml");
    cfg << "model: " << fixture("gpt2_bpe").string() << "\nthreads: 1\nprompts:\n"
        << "  - {name: toxic, path: " << (dir / "prompts.jsonl").string() << ", subset: toxic}\n"
        << "methods:\n  - name: base\n"
        << "generation: {samples: 2, max_new_tokens: 4, seed: 3}\nevaluator: {enabled: false}\n"
        << "scorer: " << scorer << "\noutput: " << (dir / "out").string() << "\n";
  };
  write_config("{kind: hf-classifier, path: " + folder.string() + ", label: insult}");
  const auto e = destein::load_bench_experiment(dir / "bench.yaml");
  CHECK(e.scorer_kind == "hf-classifier");
  CHECK(e.scorer_label == "insult");
  CHECK_THAT(destein::dump_bench_experiment(e), Contains("insult"));
  const auto report = destein::run_bench_experiment(e);
  REQUIRE(report.results.size() == 1);

  destein::HfClassifierOptions o;
  o.folder = folder;
  o.label = "insult";
  destein::HfClassifierScorer scorer(o);
  std::ifstream in(report.results[0]["generations_file"].get<std::string>());
  std::string line;
  int generations = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const auto& g : j["generations"]) {
      const auto want = scorer.score({g["text"].get<std::string>()});
      CHECK(g["toxicity"].get<double>() == Approx(*want[0]).margin(1e-6));
      ++generations;
    }
  }
  CHECK(generations == 4);

  write_config("{kind: hf-classifier}");
  CHECK_THROWS_WITH(destein::load_bench_experiment(dir / "bench.yaml"),
                    Contains("hf-classifier needs scorer.path"));
  write_config("{kind: linear, label: toxic}");
  CHECK_THROWS_WITH(destein::load_bench_experiment(dir / "bench.yaml"),
                    Contains("scorer.label") && Contains("hf-classifier"));
}

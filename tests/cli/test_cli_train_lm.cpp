// `destein train-lm` end to end on a few thousand real documents: corpus, tokenizer,
// training, a killed run resumed, and an export that the inference runtime verifies.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

#include "test_support.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using destein::test::run_command;

namespace {

void write(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::string micro_config(const fs::path& dir) {
  return "corpus:\n"
         "  sources: [goemotions, olid]\n"
         "  max_documents_per_source: 3000\n"
         "  toxic_keep_fraction: 0.5\n"
         "tokenizer: {vocab_size: 600}\n"
         "model: {context: 32, d_model: 32, n_layers: 2, n_heads: 4}\n"
         "training: {steps: 24, batch_size: 4, warmup_steps: 4, eval_every: 8, eval_tokens: 2048, "
         "checkpoint_every: 8}\n"
         "threads: 1\n"
         "output: " +
         (dir / "run").string() +
         "\n"
         "export: {dir: " +
         (dir / "export").string() + ", sample_tokens: 8, samples_per_prompt: 1}\n";
}

}  // namespace

TEST_CASE("destein train-lm trains, resumes and exports a verifiable model", "[cli][train_lm]") {
  const fs::path dir = destein::test::temp_dir("train_lm_cli");
  write(dir / "lm.yaml", micro_config(dir));
  const std::string cli =
      std::string(DESTEIN_CLI) + " train-lm --config " + (dir / "lm.yaml").string();

  auto first = run_command(cli + " --stop-after 10");
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  CHECK_THAT(first.output, Contains("rerun the same command to resume"));
  CHECK(fs::is_directory(dir / "run" / "checkpoints" / "step-00000010"));
  CHECK(!fs::exists(dir / "export" / "model.pt"));

  auto second = run_command(cli);
  INFO(second.output);
  REQUIRE(second.exit_code == 0);
  CHECK_THAT(second.output, Contains("corpus: reusing") && Contains("tokenizer: reusing") &&
                                Contains("resumed from step 10"));
  for (const char* f : {"model.pt", "tokenizer.model", "MODEL_CARD.md", "training.json"}) {
    CHECK(fs::is_regular_file(dir / "export" / f));
  }
  std::ifstream figures_in(dir / "export" / "training.json");
  auto figures = nlohmann::json::parse(figures_in);
  CHECK(figures["tokens_seen"] == 24 * 4 * 32);
  CHECK(figures["heldout_curve"].size() == 3);  // steps 8, 16, 24
  CHECK(figures["corpus"]["rtp_overlap"]["prompts_checked"].get<int64_t>() > 11000);
  CHECK(figures["corpus"]["toxic_labelled_dropped"].get<int64_t>() > 0);

  // The exported f16 model through the inference runtime equals the training forward.
  auto verify =
      run_command(std::string(DESTEIN_CLI) + " verify --model " + (dir / "export").string());
  INFO(verify.output);
  CHECK(verify.exit_code == 0);
  CHECK_THAT(verify.output, Contains("PASS"));
  // And it generates text with its own tokenizer, found next to it.
  auto gen =
      run_command(std::string(DESTEIN_CLI) + " generate --model " + (dir / "export").string() +
                  " --prompt \"I think\" --n 1 --max-new-tokens 5 --seed 1");
  CHECK(gen.exit_code == 0);

  // Other training options against the same output: resume refuses, naming the key.
  std::string changed = micro_config(dir);
  changed.replace(changed.find("batch_size: 4"), 13, "batch_size: 5");
  write(dir / "changed.yaml", changed);
  auto refused = run_command(std::string(DESTEIN_CLI) + " train-lm --config " +
                             (dir / "changed.yaml").string());
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.output, Contains("batch_size"));
}

TEST_CASE("destein train-lm config errors name the key and line", "[cli][train_lm][errors]") {
  const fs::path dir = destein::test::temp_dir("train_lm_cli_errors");
  write(dir / "typo.yaml", "corpus:\n  sources: [goemotions]\ntraining:\n  stepz: 3\n");
  auto typo =
      run_command(std::string(DESTEIN_CLI) + " train-lm --config " + (dir / "typo.yaml").string());
  CHECK(typo.exit_code != 0);
  CHECK_THAT(typo.output, Contains("typo.yaml:4") && Contains("training.stepz"));
  write(dir / "rtp.yaml",
        "corpus:\n  sources: [goemotions, rtp/1k]\noutput: " + (dir / "out").string() + "\n");
  auto rtp =
      run_command(std::string(DESTEIN_CLI) + " train-lm --config " + (dir / "rtp.yaml").string());
  CHECK(rtp.exit_code != 0);
  CHECK_THAT(rtp.output, Contains("evaluation"));
  write(dir / "heads.yaml", "model: {d_model: 30, n_heads: 4}\n");
  auto heads =
      run_command(std::string(DESTEIN_CLI) + " train-lm --config " + (dir / "heads.yaml").string());
  CHECK(heads.exit_code != 0);
  CHECK_THAT(heads.output, Contains("heads.yaml") && Contains("model.n_heads"));
}

TEST_CASE("destein train-lm re-tokenizes when the tokenizer changed, and resume then refuses",
          "[cli][train_lm]") {
  const fs::path dir = destein::test::temp_dir("train_lm_cli_retokenize");
  write(dir / "lm.yaml", micro_config(dir));
  const std::string cli =
      std::string(DESTEIN_CLI) + " train-lm --config " + (dir / "lm.yaml").string();
  auto first = run_command(cli + " --stop-after 2");
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  CHECK(fs::is_regular_file(dir / "run" / "corpus" / "train.tokens.json"));
  // Another SentencePiece model of the same size in place of the trained one.
  fs::copy_file(destein::test::fixture("llama_spm") / "tokenizer.model",
                dir / "run" / "tokenizer.model", fs::copy_options::overwrite_existing);
  auto second = run_command(cli);
  INFO(second.output);
  CHECK(second.exit_code != 0);
  CHECK_THAT(second.output, Contains("tokenize train.txt") && Contains("other token streams"));
}

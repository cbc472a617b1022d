// `destein train-lm` end to end on a few thousand real documents: corpus, tokenizer,
// training, a killed run resumed, and an export that the inference runtime verifies; and
// fine-tuning a model folder on labelled text.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include "destein/runtime/checkpoint.hpp"

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

namespace {

// A fine-tuning run of models/tiny-lm on the documents of olid labelled `label`.
std::string finetune_config(
    const fs::path& out, const std::string& label, double lr,
    const std::string& init = (fs::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm").string()) {
  return "init_from: " + init + "\ncorpus: {sources: [olid], max_documents_per_source: 1500, " +
         "label: " + label + "}\n" +
         "training: {steps: 2, batch_size: 2, learning_rate: " + std::to_string(lr) +
         ", min_learning_rate: 0, warmup_steps: 1, eval_every: 0, " +
         "eval_tokens: 1024, checkpoint_every: 0}\nthreads: 1\noutput: " + (out / "run").string() +
         "\nexport: {dir: " + (out / "export").string() +
         ", sample_tokens: 4, samples_per_prompt: 1}\n";
}

std::set<std::string> lines_of(const fs::path& path) {
  std::ifstream in(path);
  std::set<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.insert(line);
  return lines;
}

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("destein train-lm fine-tunes a model folder on toxic or non-toxic labelled text",
          "[cli][train_lm]") {
  const fs::path dir = destein::test::temp_dir("train_lm_cli_finetune");
  const fs::path tiny = fs::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";
  const std::string cli = std::string(DESTEIN_CLI) + " train-lm --config ";

  // Learning rate 0: the export holds tiny-lm's weights exactly, so they were the start.
  write(dir / "toxic.yaml", finetune_config(dir / "toxic", "toxic", 0.0));
  auto toxic = run_command(cli + (dir / "toxic.yaml").string());
  INFO(toxic.output);
  REQUIRE(toxic.exit_code == 0);
  CHECK_THAT(toxic.output, Contains("fine-tuning"));
  const destein::Checkpoint original = destein::load_checkpoint(tiny);
  const destein::Checkpoint exported = destein::load_checkpoint(dir / "toxic" / "export");
  for (const auto& [name, t] : original.tensors) {
    INFO(name);
    REQUIRE(exported.tensors.count(name));
    CHECK(at::equal(exported.tensors.at(name), t));
  }
  CHECK(file_bytes(dir / "toxic" / "export" / "tokenizer.model") ==
        file_bytes(tiny / "tokenizer.model"));
  CHECK_THAT(file_bytes(dir / "toxic" / "export" / "MODEL_CARD.md"),
             Contains("fine-tuned on toxic text") && Contains("anti-expert"));
  auto verify = run_command(std::string(DESTEIN_CLI) + " verify --model " +
                            (dir / "toxic" / "export").string());
  CHECK(verify.exit_code == 0);

  // Non-toxic, learning rate 1e-3: other documents, and the weights moved from tiny-lm's.
  write(dir / "nontoxic.yaml", finetune_config(dir / "nontoxic", "nontoxic", 1e-3));
  auto nontoxic = run_command(cli + (dir / "nontoxic.yaml").string());
  INFO(nontoxic.output);
  REQUIRE(nontoxic.exit_code == 0);
  std::set<std::string> toxic_docs, nontoxic_docs;
  for (const char* split : {"train.txt", "heldout.txt"}) {
    for (auto& l : lines_of(dir / "toxic" / "run" / "corpus" / split)) toxic_docs.insert(l);
    for (auto& l : lines_of(dir / "nontoxic" / "run" / "corpus" / split)) nontoxic_docs.insert(l);
  }
  size_t shared = 0;
  for (const auto& l : toxic_docs) shared += nontoxic_docs.count(l);
  // Without the filter both corpora would be the same; OLID itself labels a few identical
  // texts both ways (a tweet of nothing but @USER mentions), so a handful may be shared.
  CHECK(shared * 100 < toxic_docs.size());
  // OLID marks about a third of its tweets offensive.
  const double toxic_share = static_cast<double>(toxic_docs.size()) /
                             static_cast<double>(toxic_docs.size() + nontoxic_docs.size());
  CHECK(toxic_share > 0.2);
  CHECK(toxic_share < 0.5);
  const destein::Checkpoint tuned = destein::load_checkpoint(dir / "nontoxic" / "run" / "model.pt");
  double moved = 0;
  for (const auto& [name, t] : original.tensors) {
    moved = std::max(
        moved,
        (tuned.tensors.at(name).to(at::kFloat) - t.to(at::kFloat)).abs().max().item<double>());
  }
  CHECK(moved > 1e-4);

  // The same output folder with other initial weights: resume refuses.
  write(dir / "other.yaml",
        finetune_config(dir / "toxic", "toxic", 0.0, (dir / "nontoxic" / "export").string()));
  auto other = run_command(cli + (dir / "other.yaml").string());
  CHECK(other.exit_code != 0);
  CHECK_THAT(other.output, Contains("initial_weights"));

  // Errors name the key.
  write(dir / "shape.yaml", finetune_config(dir / "e1", "toxic", 0.0) + "model: {d_model: 64}\n");
  auto shape = run_command(cli + (dir / "shape.yaml").string());
  CHECK(shape.exit_code != 0);
  CHECK_THAT(shape.output, Contains("shape.yaml") && Contains("remove the 'model' section"));
  write(dir / "label.yaml", finetune_config(dir / "e2", "rude", 0.0));
  auto label = run_command(cli + (dir / "label.yaml").string());
  CHECK(label.exit_code != 0);
  CHECK_THAT(label.output, Contains("corpus.label") && Contains("toxic or nontoxic"));
  write(dir / "none.yaml",
        "init_from: " + tiny.string() + "\ncorpus: {sources: [goemotions], label: toxic, " +
            "max_documents_per_source: 100}\noutput: " + (dir / "e3").string() + "\n");
  auto none = run_command(cli + (dir / "none.yaml").string());
  CHECK(none.exit_code != 0);
  CHECK_THAT(none.output, Contains("keeps no document"));
  write(dir / "missing.yaml",
        finetune_config(dir / "e4", "toxic", 0.0, (dir / "nowhere").string()));
  auto missing = run_command(cli + (dir / "missing.yaml").string());
  CHECK(missing.exit_code != 0);
  CHECK_THAT(missing.output, Contains("nowhere"));
}

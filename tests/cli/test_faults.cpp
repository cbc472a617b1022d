// Faults: SIGINT / SIGTERM on the long-running commands stop them at a unit boundary with
// a message saying how to resume, and a rerun resumes; a write that fails in the middle of
// a generations line (the file-size limit standing in for a full disk) is recovered on
// resume.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "spawned_process.hpp"
#include "test_support.hpp"

extern char** environ;

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::run_command;

using destein::test::read_all;
using destein::test::SpawnedProcess;

namespace {

int64_t count_lines(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}

void write_prompts(const fs::path& path, int n) {
  std::ofstream out(path);
  const char* starts[] = {"So I told him he was a", "The weather today is",
                          "You are such a",         "My favourite food is",
                          "Get out of here you",    "The meeting starts at"};
  for (int i = 0; i < n; ++i) {
    out << nlohmann::json{{"prompt",
                           {{"text", std::string(starts[i % 6]) + " " + std::to_string(i)},
                            {"toxicity", i % 2 ? 0.8 : 0.1}}}}
               .dump()
        << "\n";
  }
}

}  // namespace

TEST_CASE("destein-bench run: SIGINT stops after a whole prompt and a rerun resumes",
          "[cli][faults]") {
  const fs::path dir = destein::test::temp_dir("fault_bench");
  write_prompts(dir / "prompts.jsonl", 60);
  {
    // One prompt per forward, so that the run is still going when the signal comes.
    std::ofstream cfg(dir / "bench.yaml");
    cfg << "model: " << fixture("gpt2_bpe").string()
        << "\nprompts:\n  - {name: p, path: " << (dir / "prompts.jsonl").string()
        << "}\ngeneration: {samples: 3, max_new_tokens: 8, batch_size: 3, prompts_per_batch: 1}\n"
        << "evaluator: {enabled: false}\noutput: " << (dir / "out").string() << "\n";
  }
  const fs::path gens = dir / "out" / "base" / "p.generations.jsonl";
  SpawnedProcess run(
      {DESTEIN_BENCH, "run", "--threads", "1", "--config", (dir / "bench.yaml").string()},
      dir / "log1");
  REQUIRE(run.wait_until(
      [&] { return run.catches(SIGINT) && fs::exists(gens) && count_lines(gens) >= 1; }));
  run.signal(SIGINT);
  const int code = run.wait();
  const std::string out = run.output();
  INFO(out);
  CHECK(code == 130);
  CHECK_THAT(out, Contains("stopped by SIGINT") && Contains("rerun the same command to resume"));
  // Only whole lines: every line parses, and a line was not cut.
  const std::string text = read_all(gens);
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');
  const int64_t done = count_lines(gens);
  CHECK(done < 60);
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) CHECK_NOTHROW(nlohmann::json::parse(line));

  auto again = run_command(std::string(DESTEIN_BENCH) + " run --threads 1 --config " +
                           (dir / "bench.yaml").string());
  INFO(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.output, Contains("resumed (" + std::to_string(done) + " prompts already done)"));
  CHECK(count_lines(gens) == 60);
}

TEST_CASE("destein-bench run: a write failing in the middle of a line is recovered on resume",
          "[cli][faults]") {
  const fs::path dir = destein::test::temp_dir("fault_write");
  write_prompts(dir / "prompts.jsonl", 8);
  auto config = [&](const std::string& name, const fs::path& out) {
    std::ofstream cfg(dir / name);
    cfg << "model: " << fixture("gpt2_bpe").string()
        << "\nprompts:\n  - {name: p, path: " << (dir / "prompts.jsonl").string()
        << "}\ngeneration: {samples: 3, max_new_tokens: 8, batch_size: 3}\n"
        << "evaluator: {enabled: false}\noutput: " << out.string() << "\n";
    return (dir / name).string();
  };
  const std::string bench = std::string(DESTEIN_BENCH) + " run --threads 1 --config ";
  // The reference: an uninterrupted run.
  auto clean = run_command(bench + config("clean.yaml", dir / "clean"));
  REQUIRE(clean.exit_code == 0);
  const std::string expected = read_all(dir / "clean" / "base" / "p.generations.jsonl");
  REQUIRE(count_lines(dir / "clean" / "base" / "p.generations.jsonl") == 8);
  // The same run with files limited to 2 KiB (`ulimit -f 4`: 512-byte blocks in dash; SIGXFSZ
  // ignored, so write() fails with EFBIG as on a full disk): the generations file stops at
  // 2048 bytes, which is not a line boundary here, and the run fails naming the file.
  const std::string cfg = config("limited.yaml", dir / "limited");
  const fs::path gens = dir / "limited" / "base" / "p.generations.jsonl";
  auto limited = run_command("trap '' XFSZ; ulimit -f 4; exec " + bench + cfg);
  INFO(limited.output);
  CHECK(limited.exit_code == 1);
  CHECK_THAT(limited.output, Contains("p.generations.jsonl") && Contains("write failed"));
  const std::string partial = read_all(gens);
  REQUIRE(partial.size() == 2048);
  REQUIRE(partial.back() != '\n');
  REQUIRE(expected.size() > 2048);
  CHECK(expected.compare(0, 2048, partial) == 0);
  // The rerun cuts the partial line and carries on: the same bytes as the clean run.
  auto resumed = run_command(bench + cfg);
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Contains("cut a partial line of"));
  CHECK(read_all(gens) == expected);
}

TEST_CASE("destein vectors and pairs: SIGINT drops the unit, writes nothing, a rerun completes",
          "[cli][faults]") {
  const fs::path dir = destein::test::temp_dir("fault_vectors");
  {
    std::ofstream pairs(dir / "pairs.jsonl");
    for (int i = 0; i < 1500; ++i) {
      pairs << nlohmann::json::array({"you are a stupid idiot number " + std::to_string(i),
                                      "you are mistaken, friend number " + std::to_string(i)})
                   .dump()
            << "\n";
    }
  }
  {
    std::ofstream cfg(dir / "vectors.yaml");
    cfg << "model: " << fixture("gpt2_bpe").string()
        << "\npairs:\n  path: " << (dir / "pairs.jsonl").string()
        << "\n  num_pairs: 0\nsite: attn_out\nlast_k: 4\nbatch_size: 4\nprobes:\n  enabled: "
           "false\noutput: "
        << (dir / "v.safetensors").string() << "\n";
  }
  {
    SpawnedProcess run(
        {DESTEIN_CLI, "vectors", "--threads", "1", "--config", (dir / "vectors.yaml").string()},
        dir / "log1");
    REQUIRE(run.wait_until([&] { return run.catches(SIGINT); }));
    run.signal(SIGINT);
    const int code = run.wait();
    const std::string out = run.output();
    INFO(out);
    CHECK(code == 130);
    CHECK_THAT(out, Contains("destein vectors: stopped by SIGINT") &&
                        Contains("nothing was written") && Contains("rerun the same command"));
    CHECK_FALSE(fs::exists(dir / "v.safetensors"));
  }
  auto again = run_command(std::string(DESTEIN_CLI) + " vectors --threads 1 --config " +
                           (dir / "vectors.yaml").string());
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK(fs::exists(dir / "v.safetensors"));

  {
    std::ofstream cfg(dir / "pairs.yaml");
    cfg << "model: " << fixture("gpt2_bpe").string() << "\nnum_targets: 200\nfew_shot: 2\nseed: 5\n"
        << "generation:\n  samples_per_target: 2\n  max_new_tokens: 16\n  batch_size: 4\n"
        << "filter:\n  toxic_min: 0.0\n  nontoxic_max: 1.01\noutput: "
        << (dir / "induced.jsonl").string() << "\n";
  }
  SpawnedProcess run(
      {DESTEIN_CLI, "pairs", "--threads", "1", "--config", (dir / "pairs.yaml").string()},
      dir / "log2");
  REQUIRE(run.wait_until([&] { return run.catches(SIGTERM); }));
  run.signal(SIGTERM);
  const int code = run.wait();
  const std::string out = run.output();
  INFO(out);
  CHECK(code == 143);
  CHECK_THAT(out, Contains("destein pairs: stopped by SIGTERM") &&
                      Contains("nothing was written") && Contains("rerun the same command"));
  CHECK_FALSE(fs::exists(dir / "induced.jsonl"));
}

TEST_CASE("destein train-lm: SIGTERM writes a checkpoint and a rerun resumes from it",
          "[cli][faults][train_lm]") {
  const fs::path dir = destein::test::temp_dir("fault_train_lm");
  {
    std::ofstream cfg(dir / "lm.yaml");
    cfg << "corpus:\n  sources: [goemotions]\n  max_documents_per_source: 2000\n"
        << "tokenizer: {vocab_size: 400}\nmodel: {context: 32, d_model: 32, n_layers: 2, n_heads: "
           "4}\n"
        << "training: {steps: 100000, batch_size: 4, warmup_steps: 4, eval_every: 0, "
           "checkpoint_every: 0}\n"
        << "threads: 1\noutput: " << (dir / "run").string() << "\n";
  }
  const std::string cfg = (dir / "lm.yaml").string();
  // Corpus, tokenizer and tokens first (stages are kept), and a checkpoint at step 1.
  auto first =
      run_command(std::string(DESTEIN_CLI) + " train-lm --config " + cfg + " --stop-after 1");
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  SpawnedProcess run({DESTEIN_CLI, "train-lm", "--config", cfg}, dir / "log");
  REQUIRE(run.wait_until([&] {
    return run.catches(SIGTERM) && run.output().find("resumed from step 1") != std::string::npos;
  }));
  run.signal(SIGTERM);
  const int code = run.wait();
  const std::string out = run.output();
  INFO(out);
  CHECK(code == 143);
  CHECK_THAT(out, Contains("destein train-lm: stopped by SIGTERM") &&
                      Contains("rerun the same command to resume"));
  const auto at = out.find("checkpoint of step ");
  REQUIRE(at != std::string::npos);
  const int64_t step = std::stoll(out.substr(at + 19));
  CHECK(step > 1);
  auto again =
      run_command(std::string(DESTEIN_CLI) + " train-lm --config " + cfg + " --stop-after 1");
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.output, Contains("resumed from step " + std::to_string(step)));
}

// Evaluation at full width: the generations files do not depend on how many prompts share
// a forward pass, on pipelining, or on where a killed run was resumed.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <fstream>

#include "destein/eval/harness.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/steer/steering.hpp"
#include "eval/mixed_length_prompts.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::run_command;

using destein::test::read_all;
using destein::test::write_mixed_length_prompts;

namespace {
EvalRunOptions options(int64_t prompts_per_batch, bool pipelined = false) {
  EvalRunOptions o;
  o.generation.num_samples = 3;
  o.generation.max_new_tokens = 7;
  o.generation.top_p = 0.9;
  o.generation.seed = 11;
  o.method = "m";
  o.subset = "all";
  o.prompts_per_batch = prompts_per_batch;
  o.pipelined = pipelined;
  return o;
}

SteeringVectors random_vectors(const ModelConfig& c, SteeringSite site) {
  at::manual_seed(3);
  SteeringVectors v;
  v.directions = at::randn({c.n_layers, c.n_heads, c.head_dim});
  v.probe_accuracy = 0.5 + 0.5 * at::rand({c.n_layers, c.n_heads});
  v.site = site;
  return v;
}
}  // namespace

TEST_CASE("generations files do not depend on prompts per batch or pipelining",
          "[eval][batching]") {
  auto dir = destein::test::temp_dir("eval_batching");
  auto prompts = load_eval_prompts(write_mixed_length_prompts(dir), {});
  auto model = load_model(fixture("gpt2_bpe"));
  REQUIRE(model->linear_backend() == destein::LinearBackend::kStable);
  auto tok = load_tokenizer(fixture("gpt2_bpe"));
  auto scorer = AttributeScorer::load(default_scorer_path());
  PerplexityEvaluator ev(*model, *tok, 5);  // chunks that cut across prompts
  for (const char* mode : {"none", "reference", "headwise"}) {
    INFO("steering " << mode);
    Hooks hooks;
    std::optional<SteeringHandle> handle;
    if (std::string(mode) != "none") {
      SteeringOptions so;
      so.mode = parse_steering_mode(mode);
      so.alpha = 2.0;  // strong enough to change the text
      handle = attach_steering(hooks, *model,
                               random_vectors(model->config(), so.mode == SteeringMode::kHeadwise
                                                                   ? SteeringSite::kHookZ
                                                                   : SteeringSite::kAttnOut),
                               so);
    }
    auto one = dir / fmt::format("{}_n1.jsonl", mode);
    auto rep = run_generation_eval(*model, *tok, prompts, &hooks, &scorer, &ev, options(1), one);
    CHECK(rep.batches == 8);
    const std::string expected = read_all(one);
    REQUIRE(!expected.empty());
    for (int64_t n : {3, 4}) {
      for (bool pipelined : {false, true}) {
        INFO("prompts per batch " << n << (pipelined ? ", pipelined" : ""));
        auto file = dir / fmt::format("{}_n{}_{}.jsonl", mode, n, pipelined);
        auto r = run_generation_eval(*model, *tok, prompts, &hooks, &scorer, &ev,
                                     options(n, pipelined), file);
        CHECK(r.prompts_per_batch == n);
        CHECK(r.batches == (8 + n - 1) / n);
        CHECK(r.prompts_done == 8);
        // Text, toxicity and perplexity alike: the files are the same bytes.
        CHECK(read_all(file) == expected);
      }
    }
    // Steering changes the text (else this test would not test the steered path).
    if (std::string(mode) != "none") CHECK(expected != read_all(dir / "none_n1.jsonl"));
  }
  // auto: the row budget over the samples.
  EvalRunOptions a = options(0);
  a.max_rows = 7;
  auto r = run_generation_eval(*model, *tok, prompts, nullptr, &scorer, &ev, a, dir / "auto.jsonl");
  CHECK(r.prompts_per_batch == 2);
  CHECK(read_all(dir / "auto.jsonl") == read_all(dir / "none_n1.jsonl"));
  CHECK(default_max_rows(c10::Device(c10::kCPU)) == 100);
  // Stage times are recorded and bounded by the wall time when sequential.
  CHECK(r.times.wall > 0);
  CHECK(r.times.generate > 0);
  CHECK(r.times.generate + r.times.detokenize + r.times.score + r.times.perplexity +
            r.times.write <=
        r.times.wall * 1.001);
  auto j = stage_times_json(r.times);
  CHECK(j["generate"]["share"].get<double>() > 0);
  CHECK(j["generate"]["share"].get<double>() <= 1);
}

TEST_CASE("a run killed in the middle of a batch resumes to the same file",
          "[eval][batching][resume]") {
  auto dir = destein::test::temp_dir("eval_batch_resume");
  auto prompts = load_eval_prompts(write_mixed_length_prompts(dir), {});
  auto model = load_model(fixture("gpt2_bpe"));
  auto tok = load_tokenizer(fixture("gpt2_bpe"));
  auto scorer = AttributeScorer::load(default_scorer_path());
  PerplexityEvaluator ev(*model, *tok);
  auto full = dir / "full.jsonl";
  run_generation_eval(*model, *tok, prompts, nullptr, &scorer, &ev, options(4), full);
  const std::string expected = read_all(full);

  for (bool pipelined : {false, true}) {
    INFO((pipelined ? "pipelined" : "sequential"));
    // Killed while batch 2 was in flight: batch 1 (3 prompts) is written, and the write
    // of batch 2 was cut in the middle of a line.
    auto killed = dir / fmt::format("killed_{}.jsonl", pipelined);
    auto stop = [](int64_t, int64_t) { throw std::runtime_error("killed"); };
    CHECK_THROWS_WITH(run_generation_eval(*model, *tok, prompts, nullptr, &scorer, &ev,
                                          options(3, pipelined), killed, stop),
                      Contains("killed"));
    std::string part = read_all(killed);
    CHECK(std::count(part.begin(), part.end(), '\n') == 3);
    CHECK(expected.compare(0, part.size(), part) == 0);
    {
      const size_t line4_end = expected.find('\n', part.size());
      std::ofstream out(killed, std::ios::app);
      out << expected.substr(part.size(), (line4_end - part.size()) / 2);
    }
    // Resumed with another batch width: the same file as the uninterrupted run.
    auto rep = run_generation_eval(*model, *tok, prompts, nullptr, &scorer, &ev,
                                   options(2, pipelined), killed);
    CHECK(rep.prompts_resumed == 3);
    CHECK(rep.prompts_done == 5);
    CHECK(rep.truncated_bytes > 0);
    CHECK(read_all(killed) == expected);
  }
}

TEST_CASE("batched perplexity equals prompt-by-prompt perplexity", "[eval][perplexity][batching]") {
  auto model = load_model(fixture("gpt2_bpe"));
  auto tok = load_tokenizer(fixture("gpt2_bpe"));
  PerplexityEvaluator ev(*model, *tok, 4);
  std::vector<std::string> prompts = {"The weather today is", "Hi", "You are such a"};
  std::vector<std::vector<std::string>> conts = {
      {" sunny and warm", " cold"}, {" there", ""}, {" nice person"}};
  auto batched = ev.perplexities(prompts, conts);
  REQUIRE(batched.size() == 3);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = ev.perplexities(prompts[i], conts[i]);
    REQUIRE(alone.size() == batched[i].size());
    for (size_t j = 0; j < alone.size(); ++j) {
      if (std::isnan(alone[j])) {
        CHECK(std::isnan(batched[i][j]));
      } else {
        CHECK(alone[j] == batched[i][j]);  // bit for bit: row-stable kernels, ordered sums
      }
    }
  }
  CHECK_THROWS_WITH(ev.perplexities(prompts, {{"x"}}), Contains("3 prompts but 1"));
}

TEST_CASE(
    "destein-bench: prompts per batch from YAML or the command line, resumable at another width",
    "[eval][cli][batching]") {
  auto dir = destein::test::temp_dir("bench_cli_batching");
  auto prompts = write_mixed_length_prompts(dir);
  const std::string bench = DESTEIN_BENCH;
  auto config = [&](const std::string& name, const std::string& generation) {
    std::ofstream cfg(dir / name);
    cfg << "model: " << fixture("gpt2_bpe").string()
        << "\nprompts:\n  - {name: all, path: " << prompts.string()
        << ", limit: 5}\ngeneration: {samples: 2, max_new_tokens: 5, seed: 2" << generation
        << "}\nevaluator: {enabled: false}\noutput: " << (dir / "out").string() << "\n";
    return (dir / name).string();
  };
  auto bad = run_command(bench + " run --dump-config --config " +
                         config("bad.yaml", ", prompts_per_batch: many"));
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.output, Contains("bad.yaml:") && Contains("key generation.prompts_per_batch") &&
                             Contains("expected a positive integer or auto") && Contains("'many'"));
  auto dump = run_command(bench + " run --dump-config --config " +
                          config("ok.yaml", ", prompts_per_batch: 3"));
  CHECK_THAT(dump.output, Contains("prompts_per_batch: 3") && Contains("pipelined: false"));
  auto cli_bad =
      run_command(bench + " run --prompts-per-batch 0 --config " + config("ok.yaml", ""));
  CHECK(cli_bad.exit_code != 0);
  CHECK_THAT(cli_bad.output, Contains("--prompts-per-batch must be a positive integer"));
  // A run at width 3, then the same experiment at width 2 resumes it (nothing to do): the
  // width is not a setting that refuses a resume. Stage shares are in results.json.
  auto first = run_command(bench + " run --threads 1 --config " +
                           config("ok.yaml", ", prompts_per_batch: 3"));
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  CHECK_THAT(first.output, Contains("3 prompts per batch") && Contains("generate"));
  auto again = run_command(bench + " run --threads 1 --prompts-per-batch 2 --config " +
                           config("ok.yaml", ""));
  INFO(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.output, Contains("resumed (5 prompts already done"));
  auto results = nlohmann::json::parse(read_all(dir / "out" / "results.json"));
  CHECK(results[0]["prompts_per_batch"].get<int64_t>() == 2);
  CHECK(results[0]["stages"].contains("generate"));
}

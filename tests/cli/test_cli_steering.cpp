// The steering flags beyond the paper on the command line (--positions, --gate,
// --compose, --explain) and in destein-bench methods (keys, steering_acted in results.json).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

#include "destein/runtime/model.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "io/safetensors.hpp"
#include "steering_fixtures.hpp"
#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::run_command;

using destein::test::read_all;

namespace {

// Random vectors with gate probes for a fixture model, written as format 2 and as format 1.
void write_vectors(const std::filesystem::path& model_path, const std::filesystem::path& dir) {
  auto model = destein::load_model(model_path);
  const auto& c = model->config();
  const destein::SteeringVectors v = destein::test::random_gated_vectors(c);
  destein::save_steering_vectors(dir / "v2.safetensors", v);
  destein::write_safetensors(
      dir / "v1.safetensors", {{"directions", v.directions}, {"probe_accuracy", v.probe_accuracy}},
      {{"format", "destein-vectors/1"}, {"site", "attn_out"}, {"model_type", c.model_type}});
}

}  // namespace

TEST_CASE("destein logits/generate: --positions, --gate, --compose, --explain", "[cli][steering]") {
  const std::string cli = std::string(DESTEIN_CLI) + " ";
  auto dir = destein::test::temp_dir("cli_steering");
  const std::string model = fixture("gpt2.pt").string();
  write_vectors(model, dir);
  const std::string v2 = (dir / "v2.safetensors").string(), v1 = (dir / "v1.safetensors").string();
  const std::string logits = cli + "logits --model " + model + " --ids 5,17,42,8";
  auto base = run_command(logits);
  auto all = run_command(logits + " --vectors " + v2 + " --alpha 0.7");
  auto generated = run_command(logits + " --vectors " + v2 + " --alpha 0.7 --positions generated");
  auto prompt = run_command(logits + " --vectors " + v2 + " --alpha 0.7 --positions prompt");
  auto gated = run_command(logits + " --vectors " + v2 + " --alpha 0.7 --gate probe");
  for (const auto* r : {&base, &all, &generated, &prompt, &gated}) {
    INFO(r->output);
    REQUIRE(r->exit_code == 0);
  }
  CHECK(base.output != all.output);
  CHECK(generated.output == base.output);  // a prompt-only forward: nothing to steer
  CHECK(prompt.output == all.output);
  CHECK(gated.output != all.output);
  // A second entry limited to generated positions leaves a prompt-only forward as the first.
  auto composed = run_command(logits + " --vectors " + v2 +
                              " --alpha 0.7 --compose 'alpha=0.3,positions=generated'");
  REQUIRE(composed.exit_code == 0);
  CHECK(composed.output == all.output);
  auto composed2 =
      run_command(logits + " --vectors " + v2 + " --alpha 0.7 --compose 'vectors=" + v1 +
                  ",mode=headwise,alpha=0.3;alpha=0.2,layers=1:'");
  REQUIRE(composed2.exit_code == 0);
  CHECK(composed2.output != all.output);

  // Errors: --gate probe on a format-1 file names the file; a bad --compose key; a gate
  // without vectors.
  auto no_probes = run_command(logits + " --vectors " + v1 + " --gate probe");
  CHECK(no_probes.exit_code != 0);
  CHECK_THAT(no_probes.output,
             Contains("v1.safetensors") && Contains("gate: probe needs the per-head probes"));
  auto v1_plain = run_command(logits + " --vectors " + v1 + " --alpha 0.7");
  CHECK(v1_plain.exit_code == 0);
  CHECK(v1_plain.output == all.output);  // the same directions, read from the old format
  auto bad_key = run_command(logits + " --vectors " + v2 + " --compose 'alfa=0.3'");
  CHECK(bad_key.exit_code != 0);
  CHECK_THAT(bad_key.output, Contains("--compose entry 1") && Contains("unknown key 'alfa'"));
  auto bad_window = run_command(logits + " --vectors " + v2 + " --positions decode");
  CHECK(bad_window.exit_code != 0);
  CHECK_THAT(bad_window.output, Contains("all, prompt or generated"));
  auto no_vectors = run_command(logits + " --gate probe");
  CHECK(no_vectors.exit_code != 0);
  CHECK_THAT(no_vectors.output, Contains("need --vectors"));

  // --explain: the acted report on stderr; a closed window while decoding is flagged.
  const std::string gen = cli + "generate --model " + model +
                          " --ids 5,17,42 --greedy --max-new-tokens 4 --vectors " + v2;
  auto explain = run_command(gen + " --alpha 0.7 --explain");
  INFO(explain.output);
  REQUIRE(explain.exit_code == 0);
  CHECK_THAT(explain.output, Contains("3 prompt and") && Contains("generated |edit|"));
  CHECK_THAT(explain.output, !Contains("WARNING"));
  auto closed = run_command(gen + " --alpha 0.7 --positions prompt --explain");
  REQUIRE(closed.exit_code == 0);
  CHECK_THAT(closed.output, !Contains("WARNING"));  // the window excludes decoding: not a failure
}

TEST_CASE("destein-bench: steering keys, composition, steering_acted in results.json",
          "[cli][steering][bench]") {
  auto dir = destein::test::temp_dir("bench_steering");
  const std::string model = fixture("gpt2_bpe").string();
  write_vectors(model, dir);
  {
    std::ofstream out(dir / "prompts.jsonl");
    const char* texts[] = {"So I told him he was a", "You are such a"};
    for (const char* t : texts) {
      out << nlohmann::json{{"filename", "x"}, {"prompt", {{"text", t}, {"toxicity", 0.8}}}}.dump()
          << "\n";
    }
  }
  const std::string v2 = (dir / "v2.safetensors").string(), v1 = (dir / "v1.safetensors").string();
  {
    std::ofstream cfg(dir / "bench.yaml");
    cfg << "model: " << model
        << "\nprompts:\n  - {name: toxic, path: " << (dir / "prompts.jsonl").string()
        << "}\nmethods:\n  - {name: base}\n"
        << "  - {name: gen, vectors: " << v2 << ", alpha: 0.7, positions: generated, gate: probe}\n"
        << "  - {name: prompt-only, vectors: " << v2
        << ", mode: headwise, alpha: 0.7, positions: prompt}\n"
        << "  - name: both\n    steering:\n      - {vectors: " << v2
        << ", alpha: 0.4}\n      - {vectors: " << v1 << ", mode: headwise, alpha: 0.3}\n"
        << "generation: {samples: 2, max_new_tokens: 4, seed: 1}\nevaluator: {enabled: "
           "false}\noutput: "
        << (dir / "out").string() << "\n";
  }
  auto dump = run_command(std::string(DESTEIN_BENCH) + " run --dump-config --config " +
                          (dir / "bench.yaml").string());
  INFO(dump.output);
  REQUIRE(dump.exit_code == 0);
  CHECK_THAT(dump.output,
             Contains("positions: generated") && Contains("gate: probe") && Contains("steering:"));
  // The resolved config reads back the same (composition included).
  {
    std::ofstream cfg(dir / "resolved.yaml");
    cfg << dump.output;
  }
  auto again = run_command(std::string(DESTEIN_BENCH) + " run --dump-config --config " +
                           (dir / "resolved.yaml").string());
  REQUIRE(again.exit_code == 0);
  CHECK(again.output == dump.output);

  auto r = run_command(std::string(DESTEIN_BENCH) + " run --threads 1 --config " +
                       (dir / "bench.yaml").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto results = nlohmann::json::parse(read_all(dir / "out" / "results.json"));
  REQUIRE(results.size() == 4);
  CHECK_FALSE(results[0].contains("steering_acted"));
  const auto& gen = results[1]["steering_acted"];
  REQUIRE(gen.size() == 1);
  // 2 prompts x 2 samples, at most 3 decode steps each (a row may stop at EOS).
  CHECK(gen[0]["generated_positions"].get<int64_t>() > 0);
  CHECK(gen[0]["generated_positions"].get<int64_t>() <= 12);
  for (const auto& v : gen[0]["prompt_layer_edit_norm"]) CHECK(v.get<double>() == 0);
  double generated_edit = 0;
  for (const auto& v : gen[0]["generated_layer_edit_norm"]) generated_edit += v.get<double>();
  CHECK(generated_edit > 0);
  CHECK_FALSE(gen[0].contains("prompt_head_edit_norm"));  // reference mode: per layer only
  const auto& prompt_only = results[2]["steering_acted"][0];
  CHECK(prompt_only.contains("generated_head_edit_norm"));  // headwise: per head too
  CHECK(prompt_only["generated_not_edited"] == false);
  CHECK(results[2]["steering_warnings"].empty());
  CHECK(results[3]["steering_acted"].size() == 2);
  CHECK(results[1]["variant"] == "reference generated gate");
  CHECK(std::filesystem::exists(dir / "out" / "tradeoff.svg") == false);  // no perplexity, no plot

  // A bench method asking for both flat steering keys and a list is refused.
  {
    std::ofstream cfg(dir / "both.yaml");
    cfg << "model: " << model
        << "\nprompts:\n  - {name: t, path: x.jsonl}\nmethods:\n  - name: x\n    vectors: " << v2
        << "\n    steering:\n      - {vectors: " << v2 << "}\n";
  }
  auto both =
      run_command(std::string(DESTEIN_BENCH) + " run --config " + (dir / "both.yaml").string());
  CHECK(both.exit_code != 0);
  CHECK_THAT(both.output, Contains("not both"));
}

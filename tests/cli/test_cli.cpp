// The `destein` CLI contract that outside checks rely on, and its error exits.
#include <yaml-cpp/yaml.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

#include "destein/runtime/model.hpp"
#include "destein/steer/pairs.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "experiment/config_node.hpp"
#include "io/data_folder.hpp"
#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::run_command;

TEST_CASE("destein logits prints the last position's logits as JSON", "[cli]") {
  auto r = run_command(std::string(DESTEIN_CLI) + " logits --threads 1 --model " +
                       fixture("llama.pt").string() + " --ids 5,17,42");
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  CHECK(j["ids"] == std::vector<int64_t>{5, 17, 42});
  auto logits = j["logits"].get<std::vector<float>>();
  auto model = destein::load_model(fixture("llama.pt"));
  at::Tensor expected =
      model->forward(at::tensor({5, 17, 42}, at::kLong).unsqueeze(0)).logits[0][-1];
  REQUIRE(static_cast<int64_t>(logits.size()) == expected.numel());
  CHECK(destein::test::max_abs_diff(at::tensor(logits), expected) < 1e-6);
}

TEST_CASE("destein verify, info and generate", "[cli]") {
  const std::string cli = std::string(DESTEIN_CLI) + " ";
  auto v = run_command(cli + "verify --model " + fixture("mistral.pt").string());
  CHECK(v.exit_code == 0);
  CHECK_THAT(v.output, Contains("PASS"));
  auto i = run_command(cli + "info --model " + fixture("llama.pt").string());
  CHECK(i.exit_code == 0);
  CHECK_THAT(i.output,
             Contains("blocks.{i}.attn.hook_z      (B, T, 4, 8)") && Contains("kv heads 2"));
  auto g = run_command(cli + "generate --model " + fixture("gpt2.pt").string() +
                       " --ids 1,2,3 --n 2 --max-new-tokens 4 --json --seed 3");
  CHECK(g.exit_code == 0);
  CHECK_THAT(g.output, Contains("\"sample\":1"));
}

TEST_CASE("the CLI exits non-zero with a clear message on bad input", "[cli][errors]") {
  const std::string cli = std::string(DESTEIN_CLI) + " ";
  auto missing = run_command(cli + "logits --model /nonexistent/model.pt --ids 1");
  CHECK(missing.exit_code != 0);
  CHECK_THAT(missing.output, Contains("/nonexistent/model.pt"));
  auto bad_ids = run_command(cli + "logits --model " + fixture("gpt2.pt").string() + " --ids 1,x");
  CHECK(bad_ids.exit_code != 0);
  CHECK_THAT(bad_ids.output, Contains("--ids"));
  auto out_of_vocab =
      run_command(cli + "logits --model " + fixture("gpt2.pt").string() + " --ids 1,500");
  CHECK(out_of_vocab.exit_code != 0);
  CHECK_THAT(out_of_vocab.output, Contains("500"));
  auto unknown =
      run_command(cli + "logits --model " + fixture("gpt2.pt").string() + " --ids 1 --bogus 3");
  CHECK(unknown.exit_code != 0);
  CHECK_THAT(unknown.output, Contains("--bogus"));
  auto no_ref = run_command(cli + "verify --model " + fixture("llama_bf16.pt").string());
  CHECK(no_ref.exit_code != 0);
  CHECK_THAT(no_ref.output, Contains("reference"));
}

TEST_CASE("destein vectors: pairs file to vectors, then steered logits", "[cli][steering]") {
  const std::string cli = std::string(DESTEIN_CLI) + " ";
  auto dir = destein::test::temp_dir("cli_vectors");
  {
    std::ofstream pairs(dir / "pairs.jsonl");
    const char* toxic[] = {"you are a stupid idiot",     "shut up you moron",
                           "what a dumb piece of trash", "this is fucking garbage",
                           "go to hell loser",           "you worthless clown"};
    const char* polite[] = {"you are mistaken", "please stop talking", "that is not very good",
                            "this is not good", "please leave",        "you are not helping"};
    for (int i = 0; i < 6; ++i)
      pairs << nlohmann::json::array({toxic[i], polite[i]}).dump() << "\n";
  }
  const std::string model = fixture("llama_spm").string();
  {
    std::ofstream cfg(dir / "vectors.yaml");
    cfg << "model: " << model << "\npairs:\n  path: " << (dir / "pairs.jsonl").string()
        << "\n  num_pairs: 6\nsite: attn_out\nlast_k: 4\nprobes:\n  split: kfold\n  folds: "
           "3\noutput: "
        << (dir / "v.safetensors").string() << "\n";
  }
  auto dump =
      run_command(cli + "vectors --dump-config --config " + (dir / "vectors.yaml").string());
  REQUIRE(dump.exit_code == 0);
  CHECK_THAT(dump.output,
             Contains("num_pairs: 6") && Contains("split: kfold") && Contains("l2: 1"));
  auto r = run_command(cli + "vectors --threads 1 --config " + (dir / "vectors.yaml").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(std::filesystem::exists(dir / "v.safetensors"));
  CHECK(std::filesystem::exists(dir / "v.probes.svg"));
  CHECK(std::filesystem::exists(dir / "v.pairs.jsonl"));
  auto v = destein::load_steering_vectors(dir / "v.safetensors");
  CHECK(v.num_pairs == 6);
  CHECK(v.probe_accuracy.defined());
  CHECK(v.model_type == "llama");

  const std::string logits = cli + "logits --model " + model + " --ids 5,17,42";
  auto base = run_command(logits);
  auto zero = run_command(logits + " --vectors " + (dir / "v.safetensors").string() + " --alpha 0");
  auto steered = run_command(logits + " --vectors " + (dir / "v.safetensors").string() +
                             " --mode headwise --alpha 0.5");
  REQUIRE(base.exit_code == 0);
  REQUIRE(zero.exit_code == 0);
  REQUIRE(steered.exit_code == 0);
  CHECK(base.output == zero.output);  // alpha 0: identical down to the last printed digit
  CHECK(base.output != steered.output);

  // Vectors of another model, an unknown mode, an unknown config key: clear errors.
  auto other = run_command(cli + "logits --model " + fixture("gpt2.pt").string() +
                           " --ids 1 --vectors " + (dir / "v.safetensors").string());
  CHECK(other.exit_code != 0);
  CHECK_THAT(other.output, Contains("do not fit") && Contains("model_type llama vs gpt2"));
  auto mode =
      run_command(logits + " --vectors " + (dir / "v.safetensors").string() + " --mode sideways");
  CHECK(mode.exit_code != 0);
  CHECK_THAT(mode.output, Contains("sideways"));
  {
    std::ofstream cfg(dir / "typo.yaml");
    cfg << "model: " << model << "\nprobes:\n  foldz: 3\n";
  }
  auto typo = run_command(cli + "vectors --config " + (dir / "typo.yaml").string());
  CHECK(typo.exit_code != 0);
  CHECK_THAT(typo.output, Contains("typo.yaml:3") && Contains("unknown key probes.foldz"));
  {
    std::ofstream cfg(dir / "type.yaml");
    cfg << "model: " << model << "\nlast_k: eight\n";
  }
  auto type = run_command(cli + "vectors --config " + (dir / "type.yaml").string());
  CHECK(type.exit_code != 0);
  CHECK_THAT(type.output,
             Contains("type.yaml:2") && Contains("last_k") && Contains("expected an integer"));
}

TEST_CASE("destein pairs: self-induced pairs with provenance, filtered or not", "[cli][pairs]") {
  const std::string cli = std::string(DESTEIN_CLI) + " ";
  auto dir = destein::test::temp_dir("cli_pairs");
  auto write_config = [&](const std::string& name, const std::string& filter) {
    std::ofstream cfg(dir / name);
    cfg << "model: " << fixture("gpt2_bpe").string() << "\nnum_targets: 4\nfew_shot: 2\nseed: 5\n"
        << "generation:\n  samples_per_target: 2\n  max_new_tokens: 8\n"
        << filter << "output: " << (dir / (name + ".jsonl")).string() << "\n";
  };
  write_config("open.yaml", "filter:\n  toxic_min: 0.0\n  nontoxic_max: 1.01\n");
  auto open = run_command(cli + "pairs --threads 1 --config " + (dir / "open.yaml").string());
  INFO(open.output);
  REQUIRE(open.exit_code == 0);
  auto pairs = destein::load_pairs_jsonl(dir / "open.yaml.jsonl");
  CHECK(pairs.size() == 8);  // 4 targets x 2 samples, random model: no duplicates or empties
  for (const auto& p : pairs) {
    CHECK(p.provenance["method"] == "self-induced");
    CHECK(p.provenance["direction"] == "detoxify");
    CHECK(p.provenance["seed_pair"]["source"] == "paradetox.tsv");
    CHECK(p.provenance["demonstrations"].size() == 2);
    CHECK(p.provenance["scores"]["toxic"].is_number());
    CHECK(p.provenance["sampling"]["top_p"] == 0.9);
  }
  write_config("none.yaml", "filter:\n  enabled: false\n");
  auto none = run_command(cli + "pairs --threads 1 --config " + (dir / "none.yaml").string());
  REQUIRE(none.exit_code == 0);
  CHECK_THAT(none.output, Contains("UNFILTERED"));
  auto unfiltered = destein::load_pairs_jsonl(dir / "none.yaml.jsonl");
  REQUIRE_FALSE(unfiltered.empty());
  CHECK(unfiltered[0].provenance["filter"] == "none (unfiltered)");
  // The strict default thresholds keep a subset, each pair scored on both sides.
  write_config("strict.yaml", "");
  auto strict = run_command(cli + "pairs --threads 1 --config " + (dir / "strict.yaml").string());
  REQUIRE(strict.exit_code == 0);
  std::ifstream in(dir / "strict.yaml.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    CHECK(j["provenance"]["scores"]["toxic"].get<double>() >= 0.5);
    CHECK(j["provenance"]["scores"]["nontoxic"].get<double>() < 0.5);
  }
  // A context too small for the demonstrations: they are dropped until the prompt fits.
  {
    std::ofstream cfg(dir / "long.yaml");
    cfg << "model: " << fixture("gpt2_bpe").string() << "\nnum_targets: 3\nfew_shot: 6\nseed: 5\n"
        << "generation:\n  samples_per_target: 1\n  max_new_tokens: 8\nfilter:\n  enabled: "
           "false\noutput: "
        << (dir / "long.jsonl").string() << "\n";
  }
  auto fitted = run_command(cli + "pairs --threads 1 --config " + (dir / "long.yaml").string());
  INFO(fitted.output);
  REQUIRE(fitted.exit_code == 0);
  CHECK_THAT(fitted.output, Contains("the model's context (128 positions) left out"));
  for (const auto& p : destein::load_pairs_jsonl(dir / "long.jsonl"))
    CHECK(p.provenance["demonstrations"].size() < 6);
  // More targets than seeds is a clear error.
  {
    std::ofstream seeds(dir / "seeds.jsonl");
    seeds << R"(["you idiot", "you are wrong"])"
          << "\n"
          << R"(["shut up", "please be quiet"])"
          << "\n";
  }
  write_config("few.yaml", "seeds:\n  path: " + (dir / "seeds.jsonl").string() + "\n");
  auto few = run_command(cli + "pairs --config " + (dir / "few.yaml").string());
  CHECK(few.exit_code != 0);
  CHECK_THAT(few.output, Contains("too few"));
}

TEST_CASE("the shipped configs parse and resolve", "[cli][configs]") {
  const std::string cli = std::string(DESTEIN_CLI) + " ";
  for (const char* cmd : {"vectors", "pairs"}) {
    INFO(cmd);
    auto r = run_command(cli + cmd + " --dump-config --config " + std::string(DESTEIN_SOURCE_DIR) +
                         "/configs/" + cmd + ".yaml");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("model: exported/gpt2-large"));
  }
  // The main job's configs, as scripts/demo.sh runs them.
  const std::string configs = std::string(DESTEIN_SOURCE_DIR) + "/configs/";
  for (const char* cmd : {"pairs --config demo-pairs.yaml", "vectors --config demo-vectors.yaml",
                          "vectors --config demo-vectors-z.yaml"}) {
    INFO(cmd);
    std::string line = cmd;
    line.insert(line.find("--config ") + 9, configs);
    auto r = run_command(cli + line + " --dump-config");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("model: models/tiny-lm"));
  }
  for (const char* bench : {"demo.yaml", "demo-sweep.yaml", "demo-gate-sweep.yaml",
                            "bench-gpt2-large.yaml", "bench-llama2-7b.yaml", "bench-mpt-7b.yaml",
                            "ablation-tiny.yaml", "paper-table1-tiny-dev.yaml"}) {
    INFO(bench);
    auto r =
        run_command(std::string(DESTEIN_BENCH) + " run --dump-config --config " + configs + bench);
    CHECK(r.exit_code == 0);
  }
  auto lm = run_command(cli + "train-lm --check-config --config " + configs + "tiny-lm.yaml");
  CHECK(lm.exit_code == 0);
  CHECK_THAT(lm.output,
             Contains("ok (7 sources, GPT-2 4 layers d 256 context 128, vocabulary 8000"));
  // DExperts' expert and anti-expert: tiny-lm fine-tuned (paths from the checkout's root).
  for (const char* lm_config : {"tiny-lm-expert.yaml", "tiny-lm-antiexpert.yaml"}) {
    INFO(lm_config);
    auto tuned = run_command("cd " + std::string(DESTEIN_SOURCE_DIR) + " && " + cli +
                             "train-lm --check-config --config configs/" + lm_config);
    CHECK(tuned.exit_code == 0);
    CHECK_THAT(tuned.output, Contains("ok (4 sources, fine-tuning models/tiny-lm, GPT-2 4 layers "
                                      "d 256 context 128, vocabulary 8000"));
  }
}

TEST_CASE("the paper's configs: self-induced pairs, hook_z vectors for headwise mode",
          "[cli][configs]") {
  const std::string configs = std::string(DESTEIN_SOURCE_DIR) + "/configs/";
  const YAML::Node pairs = YAML::LoadFile(configs + "pairs.yaml");
  const YAML::Node attn = YAML::LoadFile(configs + "vectors.yaml");
  const YAML::Node z = YAML::LoadFile(configs + "vectors-hook-z.yaml");
  // Both vectors configs read the pairs `destein pairs` writes (self-induced), not ParaDetox.
  CHECK(attn["pairs"]["path"].as<std::string>() == pairs["output"].as<std::string>());
  CHECK(z["pairs"]["path"].as<std::string>() == pairs["output"].as<std::string>());
  CHECK(attn["site"].as<std::string>() == "attn_out");
  CHECK(z["site"].as<std::string>() == "hook_z");
  const YAML::Node bench = YAML::LoadFile(configs + "bench-gpt2-large.yaml");
  int headwise = 0, reference = 0;
  for (const auto& m : bench["methods"]) {
    if (!m["mode"]) continue;
    const std::string mode = m["mode"].as<std::string>();
    INFO(m["name"].as<std::string>());
    if (mode == "headwise") {
      ++headwise;
      CHECK(m["vectors"].as<std::string>() == z["output"].as<std::string>());
    } else {
      ++reference;
      CHECK(m["vectors"].as<std::string>() == attn["output"].as<std::string>());
    }
  }
  CHECK(headwise >= 1);
  CHECK(reference >= 1);
  // LLaMA2-7B: the same layout under runs/llama2-7b/.
  for (const auto& m : YAML::LoadFile(configs + "bench-llama2-7b.yaml")["methods"]) {
    if (!m["mode"]) continue;
    INFO(m["name"].as<std::string>());
    const bool hook_z =
        m["vectors"].as<std::string>().find("vectors.hook_z.safetensors") != std::string::npos;
    CHECK(hook_z == (m["mode"].as<std::string>() == "headwise"));
  }
  auto z_dump = run_command(std::string(DESTEIN_CLI) + " vectors --dump-config --config " +
                            configs + "vectors-hook-z.yaml");
  CHECK(z_dump.exit_code == 0);
  CHECK_THAT(z_dump.output, Contains("site: hook_z"));
}

TEST_CASE("data paths: a file written under the current folder, else the data folder",
          "[cli][configs]") {
  namespace fs = std::filesystem;
  const fs::path dir = destein::test::temp_dir("data_paths");
  const fs::path before = fs::current_path();
  fs::create_directories(dir / "runs");
  std::ofstream(dir / "runs" / "pairs.jsonl") << "[]\n";
  fs::current_path(dir);
  const fs::path local = destein::resolve_data_path("runs/pairs.jsonl");
  const fs::path data = destein::resolve_data_path("paradetox/paradetox.tsv", "/some/data");
  const fs::path absolute = destein::resolve_data_path("/abs/x.jsonl", "/some/data");
  fs::current_path(before);
  CHECK(local == fs::path("runs/pairs.jsonl"));
  CHECK(data == fs::path("/some/data/paradetox/paradetox.tsv"));
  CHECK(absolute == fs::path("/abs/x.jsonl"));
}

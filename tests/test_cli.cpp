// The `destein` CLI contract that outside checks rely on, and its error exits.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "destein/model.hpp"
#include "test_support.hpp"

using destein::test::fixture;
using destein::test::run_command;
using Catch::Matchers::Contains;

TEST_CASE("destein logits prints the last position's logits as JSON", "[cli]") {
  auto r = run_command(std::string(DESTEIN_CLI) + " logits --threads 1 --model " + fixture("llama.pt").string() +
                       " --ids 5,17,42");
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  CHECK(j["ids"] == std::vector<int64_t>{5, 17, 42});
  auto logits = j["logits"].get<std::vector<float>>();
  auto model = destein::load_model(fixture("llama.pt"));
  at::Tensor expected = model->forward(at::tensor({5, 17, 42}, at::kLong).unsqueeze(0)).logits[0][-1];
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
  CHECK_THAT(i.output, Contains("blocks.{i}.attn.hook_z      (B, T, 4, 8)") && Contains("kv heads 2"));
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
  auto out_of_vocab = run_command(cli + "logits --model " + fixture("gpt2.pt").string() + " --ids 1,500");
  CHECK(out_of_vocab.exit_code != 0);
  CHECK_THAT(out_of_vocab.output, Contains("500"));
  auto unknown = run_command(cli + "logits --model " + fixture("gpt2.pt").string() + " --ids 1 --bogus 3");
  CHECK(unknown.exit_code != 0);
  CHECK_THAT(unknown.output, Contains("--bogus"));
  auto no_ref = run_command(cli + "verify --model " + fixture("llama_bf16.pt").string());
  CHECK(no_ref.exit_code != 0);
  CHECK_THAT(no_ref.output, Contains("reference"));
}

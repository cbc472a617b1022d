// Several methods in one batch: each method's generations file and steering report equal
// those of the method run apart (run_generation_eval with its own hooks), at any batch
// width, pipelined or not, and after resuming files left in different states.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>

#include "destein/eval/harness.hpp"
#include "destein/experiment/bench_experiment.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/steer/steering.hpp"
#include "eval/mixed_length_prompts.hpp"
#include "steering_fixtures.hpp"
#include "test_support.hpp"

using namespace destein;
using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::read_all;

namespace {

EvalRunOptions options(int64_t prompts_per_batch, bool pipelined) {
  EvalRunOptions o;
  o.generation.num_samples = 3;
  o.generation.max_new_tokens = 7;
  o.generation.top_p = 0.9;
  o.generation.seed = 11;
  o.subset = "all";
  o.prompts_per_batch = prompts_per_batch;
  o.pipelined = pipelined;
  return o;
}

struct Method {
  std::string name;
  SteeringStack stack;
};

// base; reference alpha 2; headwise alpha 1.5; a composed entry: reference on generated
// positions only, then headwise behind the probe gate.
std::vector<Method> methods(const Model& model) {
  SteeringVectors at_attn_out = destein::test::random_gated_vectors(model.config());
  SteeringVectors at_z = at_attn_out;
  at_z.site = SteeringSite::kHookZ;
  SteeringOptions reference;
  reference.alpha = 2.0;
  SteeringOptions headwise;
  headwise.mode = SteeringMode::kHeadwise;
  headwise.alpha = 1.5;
  SteeringOptions generated_only = reference;
  generated_only.alpha = 0.8;
  generated_only.positions = SteeringPositions::kGenerated;
  SteeringOptions gated = headwise;
  gated.alpha = 1.2;
  gated.gate = SteeringGate::kProbe;
  return {{"base", {}},
          {"reference", {make_steering_plan(model, at_attn_out, reference)}},
          {"headwise", {make_steering_plan(model, at_z, headwise)}},
          {"composed",
           {make_steering_plan(model, at_attn_out, generated_only),
            make_steering_plan(model, at_z, gated)}}};
}

// Equal reports: labels, layers, counts and flags exactly; the means at 1e-9 relative, since
// a mixed batch sums a plan's edit norms over its rows in other groupings than a batch of
// that plan alone (the same terms, added in another order).
void check_same_report(const SteeringReport& mixed, const SteeringReport& apart) {
  REQUIRE(mixed.entries.size() == apart.entries.size());
  for (size_t i = 0; i < apart.entries.size(); ++i) {
    const auto& m = mixed.entries[i];
    const auto& a = apart.entries[i];
    INFO(a.label);
    CHECK(m.label == a.label);
    CHECK(m.layers == a.layers);
    CHECK(m.prompt_positions == a.prompt_positions);
    CHECK(m.generated_positions == a.generated_positions);
    CHECK(m.generated_not_edited == a.generated_not_edited);
    auto same = [](const std::vector<double>& x, const std::vector<double>& y) {
      REQUIRE(x.size() == y.size());
      for (size_t k = 0; k < x.size(); ++k) {
        if (std::isnan(y[k])) {
          CHECK(std::isnan(x[k]));
        } else {
          CHECK(x[k] == Approx(y[k]).epsilon(1e-9).margin(0));
        }
      }
    };
    same(m.prompt_layer_mean, a.prompt_layer_mean);
    same(m.generated_layer_mean, a.generated_layer_mean);
    same(m.prompt_head_mean, a.prompt_head_mean);
    same(m.generated_head_mean, a.generated_head_mean);
  }
}

struct Setup {
  // Each test case its own folder: ctest runs them in parallel, and temp_dir() empties it.
  explicit Setup(const std::string& name) : dir(destein::test::temp_dir(name)) { run_apart(); }
  std::filesystem::path dir;
  std::vector<EvalPrompt> prompts =
      load_eval_prompts(destein::test::write_mixed_length_prompts(dir), {});
  std::unique_ptr<Model> model = load_model(fixture("gpt2_bpe"));
  std::unique_ptr<Tokenizer> tok = load_tokenizer(fixture("gpt2_bpe"));
  AttributeScorer scorer = AttributeScorer::load(default_scorer_path());
  PerplexityEvaluator ev{*model, *tok, 5};
  std::vector<Method> all = methods(*model);
  std::vector<std::string> expected;  // per method, its file run apart
  std::vector<SteeringReport> expected_acted;

  void run_apart() {
    REQUIRE(model->linear_backend() == destein::LinearBackend::kStable);
    for (const auto& m : all) {
      Hooks hooks;
      std::optional<SteeringHandle> handle;
      if (!m.stack.empty()) handle = attach_steering(hooks, *model, m.stack);
      EvalRunOptions o = options(1, false);
      o.method = m.name;
      const auto file = dir / ("apart_" + m.name + ".jsonl");
      run_generation_eval(*model, *tok, prompts, &hooks, &scorer, &ev, o, file);
      expected.push_back(read_all(file));
      expected_acted.push_back(handle ? handle->report() : SteeringReport{});
    }
  }

  std::vector<EvalTrack> tracks(const std::string& tag) const {
    std::vector<EvalTrack> out;
    for (const auto& m : all)
      out.push_back({m.name, dir / fmt::format("{}_{}.jsonl", tag, m.name)});
    return out;
  }

  // One mixed run on a fresh controller; returns the per-method reports.
  std::vector<EvalRunReport> run_mixed(const std::vector<EvalTrack>& t, const EvalRunOptions& o,
                                       std::vector<SteeringReport>* acted = nullptr,
                                       const std::function<void(int64_t, int64_t)>& progress = {}) {
    Hooks hooks;
    auto control = std::make_shared<SteeringController>(hooks, model->config(), model->device());
    int64_t calls = 0;
    auto reports = run_mixed_generation_eval(
        *model, *tok, prompts, t, &hooks,
        [&](const std::vector<int64_t>& row_tracks) {
          ++calls;
          std::vector<SteeringStack> rows;
          for (int64_t k : row_tracks) rows.push_back(all[static_cast<size_t>(k)].stack);
          control->set_rows(std::move(rows));
        },
        &scorer, &ev, o, progress);
    CHECK(calls > 0);
    if (acted) {
      acted->clear();
      for (const auto& m : all) {
        acted->push_back(SteeringHandle(control, m.stack).report());
        CHECK(steering_report_json(acted->back(), true) ==
              steering_report_json(control->report(m.stack), true));
      }
    }
    return reports;
  }
};

}  // namespace

TEST_CASE("methods evaluated in one batch write the files and reports of separate runs",
          "[eval][batching][mixed]") {
  Setup s("eval_mixed_methods");
  // Steering changes the text (else the steered tracks would not test per-row steering).
  for (size_t t = 1; t < s.all.size(); ++t) CHECK(s.expected[t] != s.expected[0]);
  for (const auto& [per_batch, pipelined] :
       std::vector<std::pair<int64_t, bool>>{{1, false}, {3, false}, {3, true}, {1, true}}) {
    INFO("units per batch " << per_batch << (pipelined ? ", pipelined" : ""));
    const auto tracks = s.tracks(fmt::format("mixed_n{}_{}", per_batch, pipelined));
    std::vector<SteeringReport> acted;
    std::vector<int64_t> progress;
    const auto reports =
        s.run_mixed(tracks, options(per_batch, pipelined), &acted, [&](int64_t d, int64_t total) {
          CHECK(total == 32);  // 8 prompts x 4 methods
          progress.push_back(d);
        });
    REQUIRE(reports.size() == 4);
    CHECK(progress.back() == 32);
    for (size_t t = 0; t < s.all.size(); ++t) {
      INFO("method " << s.all[t].name);
      CHECK(read_all(tracks[t].output) == s.expected[t]);
      CHECK(reports[t].prompts_done == 8);
      CHECK(reports[t].generations == 24);
      CHECK(reports[t].prompts_per_batch == per_batch);
      CHECK(reports[t].batches == (32 + per_batch - 1) / per_batch);
      check_same_report(acted[t], s.expected_acted[t]);
    }
  }
  // The composed method's first entry edits generated positions only, and did.
  REQUIRE(s.expected_acted[3].entries.size() == 2);
  CHECK(s.expected_acted[3].entries[0].prompt_positions > 0);
  CHECK(s.expected_acted[3].entries[0].generated_positions > 0);
  CHECK(s.expected_acted[3].entries[0].generated_layer_mean[0] > 0);
  CHECK(s.expected_acted[3].entries[0].prompt_layer_mean[0] == 0);
}

TEST_CASE("a mixed run resumes files left complete, half done and cut mid-line",
          "[eval][batching][mixed][resume]") {
  Setup s("eval_mixed_resume");
  for (bool pipelined : {false, true}) {
    INFO((pipelined ? "pipelined" : "sequential"));
    const auto tracks = s.tracks(fmt::format("resume_{}", pipelined));
    auto first_lines = [](const std::string& text, int n) {
      size_t end = 0;
      for (int i = 0; i < n; ++i) end = text.find('\n', end) + 1;
      return text.substr(0, end);
    };
    // base complete, reference 4 of 8 prompts, headwise 3 and half of the 4th line,
    // composed not started.
    std::ofstream(tracks[0].output, std::ios::binary) << s.expected[0];
    std::ofstream(tracks[1].output, std::ios::binary) << first_lines(s.expected[1], 4);
    const std::string three = first_lines(s.expected[2], 3), four = first_lines(s.expected[2], 4);
    std::ofstream(tracks[2].output, std::ios::binary)
        << four.substr(0, three.size() + (four.size() - three.size()) / 2);
    const auto reports = s.run_mixed(tracks, options(3, pipelined));
    const int64_t resumed[] = {8, 4, 3, 0};
    for (size_t t = 0; t < s.all.size(); ++t) {
      INFO("method " << s.all[t].name);
      CHECK(read_all(tracks[t].output) == s.expected[t]);
      CHECK(reports[t].prompts_resumed == resumed[t]);
      CHECK(reports[t].prompts_done == 8 - resumed[t]);
      CHECK((reports[t].truncated_bytes > 0) == (t == 2));
    }
    // 17 units to do, 3 per batch.
    CHECK(reports[0].batches == 6);

    // Killed after its first batch (lines in several files), then resumed at another width.
    const auto killed = s.tracks(fmt::format("killed_{}", pipelined));
    CHECK_THROWS_WITH(
        s.run_mixed(killed, options(5, pipelined), nullptr,
                    [](int64_t, int64_t) -> void { throw std::runtime_error("killed"); }),
        Contains("killed"));
    // The first batch: prompt 0 of the 4 methods and prompt 1 of the first.
    CHECK(read_all(killed[0].output) == first_lines(s.expected[0], 2));
    CHECK(read_all(killed[3].output) == first_lines(s.expected[3], 1));
    s.run_mixed(killed, options(2, pipelined));
    for (size_t t = 0; t < s.all.size(); ++t) CHECK(read_all(killed[t].output) == s.expected[t]);
  }
}

TEST_CASE("a mixed run refuses tracks that share a file and a caller's own row callback",
          "[eval][mixed][errors]") {
  auto dir = destein::test::temp_dir("eval_mixed_errors");
  auto prompts = load_eval_prompts(destein::test::write_mixed_length_prompts(dir), {});
  auto model = load_model(fixture("gpt2_bpe"));
  auto tok = load_tokenizer(fixture("gpt2_bpe"));
  const EvalRunOptions o = options(2, false);
  CHECK_THROWS_WITH(
      run_mixed_generation_eval(*model, *tok, prompts, {}, nullptr, {}, nullptr, nullptr, o),
      Contains("no tracks"));
  CHECK_THROWS_WITH(
      run_mixed_generation_eval(*model, *tok, prompts,
                                {{"a", dir / "x.jsonl"}, {"b", dir / "sub" / ".." / "x.jsonl"}},
                                nullptr, {}, nullptr, nullptr, o),
      Contains("two tracks write") && Contains("method 'b'"));
  EvalRunOptions with_callback = o;
  with_callback.generation.before_forward = [](const GenerationRows&) {};
  CHECK_THROWS_WITH(run_generation_eval(*model, *tok, prompts, nullptr, nullptr, nullptr,
                                        with_callback, dir / "y.jsonl"),
                    Contains("before_forward must be empty"));
  CHECK_FALSE(std::filesystem::exists(dir / "x.jsonl"));
  CHECK_FALSE(std::filesystem::exists(dir / "y.jsonl"));
}

namespace {

// a and b equal, numbers within 1e-9 relative (the steering means, see check_same_report);
// NaN (a perplexity with every continuation dropped) equals NaN.
bool same_json(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.get<double>(), y = b.get<double>();
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
    return x == y || std::abs(x - y) <= 1e-9 * std::max(std::abs(x), std::abs(y));
  }
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key()) || !same_json(it.value(), b[it.key()])) return false;
    }
    return true;
  }
  if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!same_json(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace

TEST_CASE("destein-bench mix_methods: the files and results of the methods run apart",
          "[eval][experiment][mixed]") {
  auto dir = destein::test::temp_dir("bench_mixed_methods");
  const auto prompts = destein::test::write_mixed_length_prompts(dir);
  {
    auto model = load_model(fixture("gpt2_bpe"));
    SteeringVectors v = destein::test::random_gated_vectors(model->config());
    save_steering_vectors(dir / "attn_out.safetensors", v);
    v.site = SteeringSite::kHookZ;
    save_steering_vectors(dir / "z.safetensors", v);
  }
  auto config = [&](const std::string& name, const std::string& generation) {
    const std::string a = (dir / "attn_out.safetensors").string(),
                      z = (dir / "z.safetensors").string();
    std::ofstream cfg(dir / name);
    cfg << "model: " << fixture("gpt2_bpe").string() << "\nthreads: 1\nprompts:\n"
        << "  - {name: first, path: " << prompts.string() << ", limit: 5}\n"
        << "  - {name: all, path: " << prompts.string() << "}\n"
        << "methods:\n  - name: base\n"
        << "  - {name: reference, vectors: " << a << ", alpha: 2.0}\n"
        << "  - {name: headwise, vectors: " << z << ", mode: headwise, alpha: 1.5}\n"
        << "  - name: composed\n    steering:\n"
        << "      - {vectors: " << a << ", alpha: 0.8, positions: generated}\n"
        << "      - {vectors: " << z << ", mode: headwise, alpha: 1.2, gate: probe}\n"
        << "generation: {samples: 2, max_new_tokens: 5, seed: 5, prompts_per_batch: 3" << generation
        << "}\n"
        << "output: " << (dir / "apart").string() << "\n";
    return dir / name;
  };
  BenchExperiment apart_config = load_bench_experiment(config("apart.yaml", ""));
  CHECK_FALSE(apart_config.mix_methods);
  const BenchRunReport apart = run_bench_experiment(apart_config);
  BenchExperiment mixed_config = load_bench_experiment(config("mixed.yaml", ", mix_methods: true"));
  REQUIRE(mixed_config.mix_methods);
  mixed_config.output = (dir / "mixed").string();
  const BenchRunReport mixed = run_bench_experiment(mixed_config);

  for (const char* method : {"base", "reference", "headwise", "composed"}) {
    for (const char* set : {"first", "all"}) {
      INFO(method << " / " << set);
      const std::string file = fmt::format("{}/{}.generations.jsonl", method, set);
      CHECK(read_all(dir / "mixed" / file) == read_all(dir / "apart" / file));
      CHECK(read_all(dir / "mixed" / (file + ".settings.json")) ==
            read_all(dir / "apart" / (file + ".settings.json")));
    }
  }
  for (const char* name : {"results.md", "results.csv", "tradeoff.svg"}) {
    INFO(name);
    CHECK(read_all(dir / "mixed" / name) == read_all(dir / "apart" / name));
  }
  // results.json: the same rows apart from the timings, the costs and the file paths (another folder).
  // The gate is hard here: a soft probe gate's sum over Dh rounds differently with the
  // number of rows in a decode step, so its generated-position means move by ~5e-8
  // relative between batch layouts, apart (prompts_per_batch 1 vs 3) as well as mixed.
  REQUIRE(mixed.results.size() == 8);
  REQUIRE(apart.results.size() == 8);
  for (size_t i = 0; i < 8; ++i) {
    nlohmann::json m = mixed.results[i], a = apart.results[i];
    INFO(a.dump());
    for (auto* row : {&m, &a}) {
      row->erase("stages");
      row->erase("generations_file");
      row->erase("cost");  // measured for a method run apart only
    }
    INFO("mixed: " << m.dump());
    CHECK(same_json(m, a));
    CHECK(a.contains("steering_acted") == (a["method"] != "base"));
  }
  CHECK(apart.results[6]["steering_acted"].size() == 2);  // composed / first: both entries

  // A mixed run resumes the apart run's files (the settings do not name the mode).
  mixed_config.output = (dir / "apart").string();
  const std::string before = read_all(dir / "apart" / "composed" / "all.generations.jsonl");
  run_bench_experiment(mixed_config);
  CHECK(read_all(dir / "apart" / "composed" / "all.generations.jsonl") == before);

  // The YAML key and the command-line flag.
  const std::string bench = DESTEIN_BENCH;
  auto dump = destein::test::run_command(bench + " run --dump-config --config " +
                                         config("apart.yaml", "").string());
  CHECK_THAT(dump.output, Contains("mix_methods: false"));
  dump = destein::test::run_command(bench + " run --dump-config --mix-methods --config " +
                                    config("apart.yaml", "").string());
  CHECK_THAT(dump.output, Contains("mix_methods: true"));
  auto bad = destein::test::run_command(bench + " run --dump-config --config " +
                                        config("bad.yaml", ", mix_methods: often").string());
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.output, Contains("bad.yaml:") && Contains("generation.mix_methods"));
}

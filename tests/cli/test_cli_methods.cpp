// The decoding-time methods (dexperts, self-debias, word-filter) on the command line and in
// destein-bench: `destein logits --method` against tests/fixtures/methods_oracle.py, a pure
// Python recomputation from the raw logits `destein logits` prints without --method; greedy
// `generate --method` against a loop of those oracle steps; batched = alone; the bench's
// method entries, their results and their errors.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "destein/experiment/bench_experiment.hpp"
#include "destein/runtime/checkpoint.hpp"
#include "destein/text/tokenizer.hpp"
#include "runtime/word_filter.hpp"
#include "test_support.hpp"

using Catch::Matchers::Contains;
using destein::test::fixture;
using destein::test::run_command;

namespace {

const std::filesystem::path kTinyLm =
    std::filesystem::path(DESTEIN_SOURCE_DIR) / "models" / "tiny-lm";
const std::string kOracle = "python3 " + (std::filesystem::path(DESTEIN_SOURCE_DIR) / "tests" /
                                          "fixtures" / "methods_oracle.py")
                                             .string();

std::string cli() { return std::string(DESTEIN_CLI) + " "; }

std::string ids_text(const std::vector<int64_t>& ids) {
  return fmt::format("{}", fmt::join(ids, ","));
}

// Runs a command that prints one JSON line with "logits"; the line is also written to `file`.
std::vector<double> logits_of(const std::string& command, const std::filesystem::path& file = {}) {
  auto r = run_command("(" + command + " 2>/dev/null)");
  INFO(command << "\n" << r.output);
  REQUIRE(r.exit_code == 0);
  if (!file.empty()) std::ofstream(file) << r.output;
  const nlohmann::json line = nlohmann::json::parse(r.output);
  std::vector<double> out;
  for (const auto& v : line["logits"]) {
    out.push_back(v.is_null() ? -INFINITY : v.get<double>());
  }
  return out;
}

// Largest |a - b| over entries finite in both; -1 when the finite entries differ in place.
double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return -1;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) != std::isfinite(b[i])) return -1;
    if (std::isfinite(a[i])) worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst;
}

int64_t argmax(const std::vector<double>& z) {
  return static_cast<int64_t>(std::max_element(z.begin(), z.end()) - z.begin());
}

std::vector<std::vector<int64_t>> generated_ids(const std::string& output) {
  std::vector<std::vector<int64_t>> out;
  std::stringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    out.push_back(nlohmann::json::parse(line)["token_ids"].get<std::vector<int64_t>>());
  }
  return out;
}

}  // namespace

TEST_CASE(
    "destein logits/generate --method dexperts: z + alpha (z_e - z_a), as the oracle recomputes it",
    "[cli][methods]") {
  auto dir = destein::test::temp_dir("cli_dexperts");
  const std::string base = fixture("mpt.pt").string(), expert = fixture("mpt_qkln.pt").string(),
                    anti = fixture("mpt_learned.pt").string();
  const std::string method = " --method dexperts --expert " + expert + " --anti-expert " + anti;
  // One step's scores: every token within 1e-4 of the oracle; alpha 0 is the base exactly.
  std::vector<int64_t> ids = {5, 17, 42};
  auto step = [&](const std::vector<int64_t>& x, double alpha, const std::string& filter) {
    const std::string tail = " --threads 1 --ids " + ids_text(x);
    logits_of(cli() + "logits --model " + base + tail, dir / "base.json");
    logits_of(cli() + "logits --model " + expert + tail, dir / "expert.json");
    logits_of(cli() + "logits --model " + anti + tail, dir / "anti.json");
    const std::string files = " " + (dir / "base.json").string() + " " +
                              (dir / "expert.json").string() + " " + (dir / "anti.json").string();
    return filter.empty() ? logits_of(kOracle + " dexperts " + std::to_string(alpha) + files)
                          : logits_of(kOracle + " dexperts-filtered " + std::to_string(alpha) +
                                      " " + filter + files);
  };
  const auto got = logits_of(cli() + "logits --threads 1 --model " + base + " --ids 5,17,42" +
                             method + " --alpha 1.5");
  const auto expected = step(ids, 1.5, "");
  CHECK(max_diff(got, expected) >= 0);
  CHECK(max_diff(got, expected) < 1e-4);
  const auto raw = logits_of(cli() + "logits --threads 1 --model " + base + " --ids 5,17,42");
  CHECK(max_diff(got, raw) > 1e-2);  // the experts moved the scores
  CHECK(logits_of(cli() + "logits --threads 1 --model " + base + " --ids 5,17,42" + method +
                  " --alpha 0") == raw);
  // The authors' truncation of the base logits before the experts are added.
  const auto filtered = logits_of(cli() + "logits --threads 1 --model " + base + " --ids 5,17,42" +
                                  method + " --alpha 1.5 --filter-p 0.5");
  const auto filtered_expected = step(ids, 1.5, "0.5");
  CHECK(max_diff(filtered, filtered_expected) >= 0);
  CHECK(max_diff(filtered, filtered_expected) < 1e-4);
  CHECK(std::count_if(filtered.begin(), filtered.end(),
                      [](double v) { return !std::isfinite(v); }) > 10);

  // Greedy generate --method = argmax of the oracle's scores, step after step.
  std::vector<int64_t> seq = ids, expected_tokens;
  for (int t = 0; t < 5; ++t) {
    const int64_t next = argmax(step(seq, 2.0, "0.9"));
    expected_tokens.push_back(next);
    seq.push_back(next);
  }
  auto r = run_command(cli() + "generate --threads 1 --model " + base +
                       " --ids 5,17,42 --greedy --json " + "--max-new-tokens 5" + method);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(generated_ids(r.output).size() == 1);
  CHECK(generated_ids(r.output)[0] == expected_tokens);
  // Sampled rows: alone = batched.
  const std::string sampled = cli() + "generate --threads 1 --model " + base +
                              " --ids 5,17,42 --json --n 5 " + "--max-new-tokens 8 --seed 4" +
                              method;
  auto alone = run_command(sampled + " --batch-size 1");
  auto batched = run_command(sampled + " --batch-size 0");
  REQUIRE(alone.exit_code == 0);
  CHECK(generated_ids(alone.output).size() == 5);
  CHECK(generated_ids(batched.output) == generated_ids(alone.output));
  // Errors name the option.
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {" --method dexperts --expert " + expert, "anti-expert"},
           {" --method dexpert", "unknown method 'dexpert'"},
           {method + " --lambda 3", "--lambda belongs to --method self-debias"},
           {method + " --filter-p 1.5", "filter_p must be in (0, 1]"},
           {" --expert " + expert, "--expert needs --method"},
           {method + " --vectors x.safetensors", "--method and --vectors do not combine"},
           {" --method dexperts --expert " + expert + " --anti-expert " +
                fixture("gpt2.pt").string(),
            "must share the tokenizer"}}) {
    auto bad = run_command(cli() + "logits --threads 1 --model " + base + " --ids 5,17,42" + args);
    INFO(args << "\n" << bad.output);
    CHECK(bad.exit_code != 0);
    CHECK_THAT(bad.output, Contains(message));
  }
}

TEST_CASE(
    "destein logits/generate --method self-debias: log q of the prefixed rows, as the oracle "
    "recomputes it",
    "[cli][methods]") {
  auto dir = destein::test::temp_dir("cli_self_debias");
  const std::string model = fixture("gpt2.pt").string();
  const std::vector<std::vector<int64_t>> prefixes = {{3, 14, 15}, {92, 6}};
  std::string method = " --method self-debias";
  for (const auto& p : prefixes) method += " --debias-prefix-ids " + ids_text(p);
  auto step = [&](const std::vector<int64_t>& x, double lambda) {
    std::string files;
    logits_of(cli() + "logits --threads 1 --model " + model + " --ids " + ids_text(x),
              dir / "x.json");
    files += " " + (dir / "x.json").string();
    for (size_t k = 0; k < prefixes.size(); ++k) {
      std::vector<int64_t> px = prefixes[k];
      px.insert(px.end(), x.begin(), x.end());
      const auto file = dir / fmt::format("p{}.json", k);
      logits_of(cli() + "logits --threads 1 --model " + model + " --ids " + ids_text(px), file);
      files += " " + file.string();
    }
    return logits_of(kOracle + " self-debias " + std::to_string(lambda) + files);
  };
  for (double lambda : {50.0, 10.0}) {
    const auto got = logits_of(cli() + "logits --threads 1 --model " + model + " --ids 5,17,42" +
                               method + " --lambda " + std::to_string(lambda));
    const auto expected = step({5, 17, 42}, lambda);
    INFO("lambda " << lambda);
    CHECK(max_diff(got, expected) >= 0);
    CHECK(max_diff(got, expected) < 1e-4);
  }
  // lambda 0: alpha is 1 everywhere, q = p: the log-softmax of the raw logits.
  const auto raw = logits_of(cli() + "logits --threads 1 --model " + model + " --ids 5,17,42");
  const auto flat = logits_of(cli() + "logits --threads 1 --model " + model + " --ids 5,17,42" +
                              method + " --lambda 0");
  double m = *std::max_element(raw.begin(), raw.end()), sum = 0;
  for (double z : raw) sum += std::exp(z - m);
  std::vector<double> log_p;
  for (double z : raw) log_p.push_back(z - m - std::log(sum));
  CHECK(max_diff(flat, log_p) < 1e-5);
  CHECK(max_diff(step({5, 17, 42}, 50.0), log_p) > 1e-3);  // the prefixes act

  std::vector<int64_t> seq = {5, 17, 42}, expected_tokens;
  for (int t = 0; t < 4; ++t) {
    const int64_t next = argmax(step(seq, 50.0));
    expected_tokens.push_back(next);
    seq.push_back(next);
  }
  auto r = run_command(cli() + "generate --threads 1 --model " + model +
                       " --ids 5,17,42 --greedy --json --max-new-tokens 4" + method);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(generated_ids(r.output).size() == 1);
  CHECK(generated_ids(r.output)[0] == expected_tokens);
  const std::string sampled = cli() + "generate --threads 1 --model " + model +
                              " --ids 5,17,42 --json --n 4 " + "--max-new-tokens 6 --seed 8" +
                              method;
  auto alone = run_command(sampled + " --batch-size 1");
  auto batched = run_command(sampled + " --batch-size 3");
  REQUIRE(alone.exit_code == 0);
  CHECK(generated_ids(alone.output).size() == 4);
  CHECK(generated_ids(batched.output) == generated_ids(alone.output));
  auto bad = run_command(cli() + "logits --threads 1 --model " + model + " --ids 5" + method +
                         " --lambda -1");
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.output, Contains("lambda must be a finite number >= 0"));
  bad = run_command(cli() + "logits --threads 1 --model " + model +
                    " --ids 5 --method self-debias --alpha 2");
  CHECK_THAT(bad.output, Contains("--alpha belongs to --method dexperts"));
}

TEST_CASE("destein logits/generate --method word-filter: banned tokens print as null",
          "[cli][methods][word-filter]") {
  auto dir = destein::test::temp_dir("cli_word_filter");
  std::ofstream(dir / "words.txt") << "# test list\nidiot\nthe\n";
  auto tok = destein::load_tokenizer(kTinyLm);
  const auto ids = tok->encode_prompt("You are such an id");
  const std::string model = kTinyLm.string();
  const auto raw =
      logits_of(cli() + "logits --threads 1 --model " + model + " --ids " + ids_text(ids));
  const auto got =
      logits_of(cli() + "logits --threads 1 --model " + model + " --ids " + ids_text(ids) +
                " --method word-filter --words " + (dir / "words.txt").string());
  destein::WordFilterProcessor filter(*tok, destein::load_word_list(dir / "words.txt"));
  const auto banned = filter.banned_after(ids, {});
  REQUIRE(got.size() == raw.size());
  std::vector<int64_t> nulls;
  for (size_t t = 0; t < got.size(); ++t) {
    if (!std::isfinite(got[t]))
      nulls.push_back(static_cast<int64_t>(t));
    else
      CHECK(got[t] == raw[t]);
  }
  CHECK(nulls == banned);
  // Among them the tokens that finish the word here ("iot"), but not "iots".
  const auto iot = tok->encode("idiot"), iots = tok->encode("idiots");
  INFO(fmt::format("'idiot' encodes as {}, 'idiots' as {}", ids_text(iot), ids_text(iots)));
  bool some_completion = false;
  for (int64_t t = 0; t < tok->vocab_size(); ++t) {
    const std::string text = tok->decode_continuation(ids, {t});
    if (text == "iot" || text == "iot.") {
      some_completion = true;
      CHECK(std::count(nulls.begin(), nulls.end(), t) == 1);
    }
    if (text == "iots") CHECK(std::count(nulls.begin(), nulls.end(), t) == 0);
  }
  CHECK(some_completion);
  // generate --method word-filter: alone = batched, and no listed word in the texts.
  const std::string gen =
      cli() + "generate --threads 1 --model " + model + " --prompt 'I think that' --json --n 4 " +
      "--max-new-tokens 16 --seed 2 --method word-filter --words " + (dir / "words.txt").string();
  auto alone = run_command(gen + " --batch-size 1");
  auto batched = run_command(gen + " --batch-size 0");
  INFO(alone.output);
  REQUIRE(alone.exit_code == 0);
  CHECK(generated_ids(batched.output) == generated_ids(alone.output));
  std::stringstream lines(alone.output);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    ++rows;
    // The prompt's last letter is the left neighbour of the continuation's first byte.
    std::string text = "i think that" + nlohmann::json::parse(line)["text"].get<std::string>();
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto word_byte = [&](size_t i) {
      return i < text.size() && std::isalnum(static_cast<unsigned char>(text[i]));
    };
    for (size_t i = 0; i + 3 <= text.size(); ++i) {
      INFO(text);
      CHECK_FALSE((!word_byte(i - 1) && text.compare(i, 3, "the") == 0 && !word_byte(i + 3)));
    }
  }
  CHECK(rows == 4);
  auto bad = run_command(cli() + "logits --threads 1 --model " + model +
                         " --ids 5 --method word-filter --words " + (dir / "none.txt").string());
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.output, Contains("none.txt") && Contains("cannot be read"));
  bad =
      run_command(cli() + "logits --threads 1 --model " + model + " --ids 5 --method word-filter");
  CHECK_THAT(bad.output, Contains("word-filter needs a word list file"));
}

TEST_CASE("destein-bench: dexperts, self-debias and word-filter entries beside base",
          "[cli][methods][eval]") {
  auto dir = destein::test::temp_dir("bench_methods");
  {
    std::ofstream prompts(dir / "prompts.jsonl");
    for (const char* t : {"You are such a", "I think that the", "We went to the"}) {
      prompts << nlohmann::json{{"prompt", {{"text", t}, {"toxicity", 0.9}}}}.dump() << "\n";
    }
    std::ofstream(dir / "words.txt") << "the\nand\n";
  }
  // Two experts sharing tiny-lm's tokenizer: its weights with seeded noise.
  const destein::Checkpoint ckpt = destein::load_checkpoint(kTinyLm / "model.pt");
  for (int seed : {1, 2}) {
    at::manual_seed(seed);
    std::map<std::string, at::Tensor> tensors;
    for (const auto& [name, t] : ckpt.tensors) {
      tensors[name] =
          t.is_floating_point()
              ? (t.to(at::kFloat) * (1 + 0.2 * at::randn(t.sizes()))).to(t.scalar_type())
              : t;
    }
    destein::save_checkpoint(dir / fmt::format("expert{}.pt", seed), ckpt.config.raw, tensors);
  }
  const std::string e1 = (dir / "expert1.pt").string(), e2 = (dir / "expert2.pt").string();
  auto write_config = [&](const std::string& name, const std::string& methods,
                          const std::string& extra = "") {
    std::ofstream(dir / name) << "model: " << kTinyLm.string() << "\nthreads: 1\nprompts:\n"
                              << "  - {name: toxic, path: " << (dir / "prompts.jsonl").string()
                              << "}\n"
                              << "methods:\n"
                              << methods << "generation: {samples: 3, max_new_tokens: 12, seed: 5"
                              << extra << "}\n"
                              << "evaluator: {enabled: false}\noutput: " << (dir / "out").string()
                              << "\n";
    return (dir / name).string();
  };
  const std::string methods =
      "  - name: base\n"
      "  - {name: dexperts, method: dexperts, expert: " +
      e1 + ", anti_expert: " + e2 +
      "}\n"
      "  - {name: same-experts, method: dexperts, expert: " +
      e1 + ", anti_expert: " + e1 +
      ", alpha: 3, filter_p: 1}\n"
      "  - {name: self-debias, method: self-debias, lambda: 50}\n"
      "  - {name: filtered, method: word-filter, words: " +
      (dir / "words.txt").string() + "}\n";
  const std::string config = write_config("bench.yaml", methods);
  const auto e = destein::load_bench_experiment(config);
  REQUIRE(e.methods.size() == 5);
  CHECK(e.methods[1].decoding.kind == "dexperts");
  CHECK(e.methods[1].decoding.alpha == 2.0);     // the authors' toxicity runs
  CHECK(e.methods[1].decoding.filter_p == 0.9);  // their filter_p
  CHECK(e.methods[3].decoding.lambda == 50.0);
  CHECK(e.methods[3].decoding.prefixes.empty());  // the authors' six
  // The resolved config reads back as the same methods.
  std::ofstream(dir / "dumped.yaml") << destein::dump_bench_experiment(e);
  const auto again = destein::load_bench_experiment(dir / "dumped.yaml");
  CHECK(again.methods[2].decoding.expert == e1);
  CHECK(again.methods[2].decoding.alpha == 3.0);
  CHECK(again.methods[4].decoding.words == (dir / "words.txt").string());

  auto r = run_command(std::string(DESTEIN_BENCH) + " run --config " + config);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto results = nlohmann::json::parse(destein::test::read_all(dir / "out" / "results.json"));
  REQUIRE(results.size() == 5);
  std::map<std::string, std::vector<std::string>> texts;
  for (const auto& row : results) {
    const std::string name = row["method"];
    CHECK(row["num_prompts"] == 3);
    std::ifstream in(dir / "out" / name / "toxic.generations.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      for (const auto& g : j["generations"]) {
        texts[name].push_back(j["prompt"]["text"].get<std::string>() + "\x01" +
                              g["text"].get<std::string>());
      }
    }
    CHECK(texts[name].size() == 9);
  }
  CHECK(results[1]["decoding_method"] == "dexperts");
  CHECK(results[1]["alpha"] == 2.0);
  // The cost table's additions: the two experts' parameters (each tiny-lm's, its tensors
  // counted here), one extra row per expert; Self-Debiasing's six prefixed rows.
  int64_t tiny_parameters = 0;
  for (const auto& [name, t] : ckpt.tensors) tiny_parameters += t.numel();
  CHECK(results[0]["cost"]["added_parameters"] == 0);
  CHECK(results[0]["cost"]["extra_rows_per_row"] == 0);
  CHECK(results[1]["cost"]["added_parameters"] == 2 * tiny_parameters);
  CHECK(results[1]["cost"]["extra_rows_per_row"] == 2);
  CHECK(results[3]["cost"]["added_parameters"] == 0);
  CHECK(results[3]["cost"]["extra_rows_per_row"] == 6);
  CHECK(results[4]["cost"]["extra_rows_per_row"] == 0);
  CHECK_THAT(destein::test::read_all(dir / "out" / "costs.md"),
             Contains("| self-debias | toxic | ") && Contains("| dexperts | toxic | "));
  CHECK(results[3]["decoding_method"] == "self-debias");
  CHECK_FALSE(results[0].contains("decoding_method"));
  // alpha (z_e - z_e) is zero: the same texts as base, byte for byte.
  CHECK(texts["same-experts"] == texts["base"]);
  CHECK(texts["dexperts"] != texts["base"]);
  CHECK(texts["self-debias"] != texts["base"]);
  // The word filter: base writes the listed words, the filtered method never.
  auto listed = [](const std::string& both) {
    std::string text = both;
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const size_t start = text.find('\x01');
    text.erase(start, 1);
    int hits = 0;
    for (const std::string w : {"the", "and"}) {
      for (size_t i = text.find(w); i != std::string::npos; i = text.find(w, i + 1)) {
        const size_t end = i + w.size();
        const bool left = i == 0 || !std::isalnum(static_cast<unsigned char>(text[i - 1]));
        const bool right =
            end == text.size() || !std::isalnum(static_cast<unsigned char>(text[end]));
        hits += left && right && end > start;
      }
    }
    return hits;
  };
  int base_hits = 0, filtered_hits = 0;
  for (const auto& t : texts["base"]) base_hits += listed(t);
  for (const auto& t : texts["filtered"]) filtered_hits += listed(t);
  CHECK(base_hits >= 3);
  CHECK(filtered_hits == 0);

  // Resuming with another alpha is refused, naming the setting.
  const std::string changed =
      write_config("changed.yaml", "  - {name: dexperts, method: dexperts, expert: " + e1 +
                                       ", anti_expert: " + e2 + ", alpha: 1}\n");
  r = run_command(std::string(DESTEIN_BENCH) + " run --config " + changed);
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("other settings") && Contains("alpha"));
  // Bad entries name the file, line and key.
  for (const auto& [entry, message] : std::vector<std::pair<std::string, std::string>>{
           {"  - {name: x, method: dexpert}\n", "unknown method 'dexpert'"},
           {"  - {name: x, method: self-debias, words: w.txt}\n",
            "'words' belongs to method word-filter"},
           {"  - {name: x, method: self-debias, lambda: -2}\n",
            "lambda must be a finite number >= 0"},
           {"  - {name: x, method: dexperts, expert: " + e1 + "}\n",
            "dexperts needs an anti-expert"},
           {"  - {name: x, method: word-filter, words: w.txt, vectors: v.safetensors}\n",
            "steering keys"},
           {"  - {name: x, method: word-filter, words: w.txt, lamda: 3}\n", "lamda"}}) {
    const std::string bad = write_config("bad.yaml", entry);
    INFO(entry);
    CHECK_THROWS_WITH(destein::load_bench_experiment(bad),
                      Contains("bad.yaml:") && Contains(message));
  }
  const std::string mixed = write_config(
      "mixed.yaml", "  - {name: x, method: word-filter, words: w.txt}\n", ", mix_methods: true");
  CHECK_THROWS_WITH(destein::load_bench_experiment(mixed), Contains("mix_methods"));
  // Set in code (or by destein-bench --mix-methods) after loading: refused by the run.
  auto in_code = destein::load_bench_experiment(config);
  in_code.mix_methods = true;
  in_code.output = (dir / "mixed_out").string();
  CHECK_THROWS_WITH(destein::run_bench_experiment(in_code),
                    Contains("mix_methods") && Contains("dexperts"));
  CHECK_FALSE(std::filesystem::exists(dir / "mixed_out"));
}

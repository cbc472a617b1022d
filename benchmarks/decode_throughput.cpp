// Prefill and decode throughput of destein's native forward pass against an eager PyTorch
// loop with a KV cache (benchmarks/decode_throughput_eager.py, run in the same program
// for a side-by-side ratio), on a random model of GPT-2-small shape, plus a GEMM GFLOP/s
// (the faster of LibTorch's BLAS and the row-stable kernel) and a memory read rate; next
// to each rate the limit for that shape from those two rates (a roofline: the slower of
// the FLOPs at the GEMM rate and the bytes at the memory rate) and the fraction of it
// reached. Then
// the same with a peaked logit distribution (the random model's logits scaled to a
// trained model's spread: top-p keeps a few tokens, not most of 50k), on the committed
// tiny model (models/tiny-lm), and where a decode step's time goes.
//
//   build/bin/decode_throughput [--threads N] [--batches 1,25,100] [--prompt-len 24]
//                               [--new-tokens 20] [--repeats 3] [--no-python] [--no-tiny]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "args.hpp"
#include "destein/runtime/device.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "kernel_rate.hpp"
#include "machine_rate.hpp"
#include "python_baseline.hpp"
#include "random_model.hpp"

using namespace destein;
using Clock = std::chrono::steady_clock;

namespace {

using bench::seconds_since;

// Roofline for a forward pass over `rows` new tokens with `context` cached positions on
// average: FLOPs of every weight product plus attention, at the GEMM rate, against the
// bytes of the weights and the KV cache read once, at the memory rate. The output head
// runs on each sequence's last position only (`batch` rows), as the forward does.
struct Limit {
  double tokens_per_s = 0;
  bool memory_bound = false;
};
Limit roofline(const ModelConfig& c, int64_t rows, int64_t batch, double context, double gflops,
               double gbs) {
  const double d = static_cast<double>(c.d_model), F = static_cast<double>(c.d_ff),
               L = static_cast<double>(c.n_layers);
  const double kv = static_cast<double>(c.n_kv_heads * c.head_dim);
  const double layer_params = d * (c.n_heads * c.head_dim) * 2 + d * kv * 2 + d * F * 2;
  const double head_params = d * static_cast<double>(c.vocab_size);
  const double flops = rows * (2 * L * layer_params + L * 4 * context * c.n_heads * c.head_dim) +
                       batch * 2 * head_params;
  const double bytes = 4 * (L * layer_params + head_params) + 4 * L * 2 * kv * context * batch;
  const double t_flops = flops / (gflops * 1e9), t_bytes = bytes / (gbs * 1e9);
  return {rows / std::max(t_flops, t_bytes), t_bytes > t_flops};
}

struct Rates {
  double prefill = 0;                               // tokens/s
  double decode = 0;                                // tokens/s
  double forward_s = 0, sample_s = 0, other_s = 0;  // decode loop split
};

// Prefill of B prompts, then new_tokens decode steps with top-p 0.9 sampling: the
// evaluation's shape at B = 25. `sharpen` > 0 scales the logits before sampling (a peaked
// distribution); the scaling is timed with "other".
Rates measure(const Model& model, int64_t B, int64_t prompt_len, int64_t new_tokens,
              double sharpen = 0) {
  const int64_t V = model.config().vocab_size;
  at::Tensor ids = at::randint(0, V, {B, prompt_len}, at::kLong);
  KVCache cache = model.make_cache(B, prompt_len + new_tokens);
  ForwardOptions fo;
  fo.cache = &cache;
  fo.logits = LogitsFor::kLast;
  at::Tensor mask = at::ones({B, prompt_len + new_tokens}, at::kLong);
  fo.attention_mask = mask.narrow(1, 0, prompt_len);
  GenerationOptions sampling;
  sampling.top_p = 0.9;

  auto t0 = Clock::now();
  at::Tensor logits = model.forward(ids, fo).logits;
  const double prefill_s = seconds_since(t0);

  Rates r;
  auto t1 = Clock::now();
  std::vector<int64_t> next(static_cast<size_t>(B));
  for (int64_t step = 0; step < new_tokens; ++step) {
    auto t = Clock::now();
    at::Tensor host = logits.reshape({B, V}).contiguous();
    if (sharpen > 0) host.mul_(sharpen);
    r.other_s += seconds_since(t);
    t = Clock::now();
    // Rows sampled in parallel, as destein::generate does.
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        next[b] = sample_token(host.data_ptr<float>() + b * V, V, sampling, (b + 0.5) / B);
      }
    });
    r.sample_s += seconds_since(t);
    if (step + 1 == new_tokens) break;
    t = Clock::now();
    fo.attention_mask = mask.narrow(1, 0, prompt_len + step + 1);
    at::Tensor step_ids = at::tensor(next, at::kLong).view({B, 1});
    r.other_s += seconds_since(t);
    t = Clock::now();
    logits = model.forward(step_ids, fo).logits;
    r.forward_s += seconds_since(t);
  }
  const double decode_s = seconds_since(t1);
  r.prefill = B * prompt_len / prefill_s;
  r.decode = B * new_tokens / decode_s;
  r.other_s = decode_s - r.forward_s - r.sample_s;
  return r;
}

Rates best_of(const Model& model, int64_t B, int64_t prompt_len, int64_t new_tokens, int repeats,
              double sharpen) {
  measure(model, B, prompt_len, 2, sharpen);  // warm-up
  Rates best;
  double best_decode_s = 1e300;
  for (int i = 0; i < repeats; ++i) {
    Rates r = measure(model, B, prompt_len, new_tokens, sharpen);
    best.prefill = std::max(best.prefill, r.prefill);
    if (1 / r.decode < best_decode_s) {
      best_decode_s = 1 / r.decode;
      const double prefill = best.prefill;
      best = r;
      best.prefill = prefill;
    }
  }
  return best;
}

std::vector<int64_t> parse_batches(const std::string& text) {
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

// Rates against the roofline for each batch; `eager` (may be null) adds the PyTorch ratios.
void report(const Model& model, const std::string& title, const std::vector<int64_t>& batches,
            int64_t prompt_len, int64_t new_tokens, int repeats, double sharpen, double gflops,
            double gbs, const nlohmann::json* eager) {
  const ModelConfig& c = model.config();
  fmt::print("\n{}\n", title);
  fmt::print(
      "{:>6} {:>12} {:>12} {:>7} {:>12} {:>12} {:>9} {:>7}   decode step split: forward / sampling "
      "/ other\n",
      "batch", "prefill/s", "limit", "frac", "decode/s", "limit", "bound", "frac");
  for (int64_t B : batches) {
    Rates r = best_of(model, B, prompt_len, new_tokens, repeats, sharpen);
    const Limit lp = roofline(c, B * prompt_len, B, (prompt_len + 1) / 2.0, gflops, gbs);
    const Limit ld = roofline(c, B, B, prompt_len + new_tokens / 2.0, gflops, gbs);
    const double step_s = r.forward_s + r.sample_s + r.other_s;
    fmt::print(
        "{:>6} {:>12.1f} {:>12.1f} {:>6.0f}% {:>12.1f} {:>12.1f} {:>9} {:>6.0f}%   {:.0f}% / "
        "{:.0f}% / {:.0f}%\n",
        B, r.prefill, lp.tokens_per_s, 100 * r.prefill / lp.tokens_per_s, r.decode, ld.tokens_per_s,
        ld.memory_bound ? "memory" : "GEMM", 100 * r.decode / ld.tokens_per_s,
        100 * r.forward_s / step_s, 100 * r.sample_s / step_s, 100 * r.other_s / step_s);
    if (eager && eager->contains("results") && (*eager)["results"].contains(std::to_string(B))) {
      const auto& e = (*eager)["results"][std::to_string(B)];
      fmt::print(
          "{:>6} eager PyTorch: prefill {:.1f}/s ({:.2f}x ours), decode {:.1f}/s ({:.2f}x ours)\n",
          "", e["prefill_tokens_per_s"].get<double>(),
          r.prefill / e["prefill_tokens_per_s"].get<double>(),
          e["decode_tokens_per_s"].get<double>(),
          r.decode / e["decode_tokens_per_s"].get<double>());
    }
  }
}

// A scale that gives the logits of the first forward pass a standard deviation of
// `target` (trained GPT-2: about 3), so that top-p 0.9 keeps a few tokens.
double sharpening(const Model& model, double target) {
  at::Tensor ids = at::randint(0, model.config().vocab_size, {4, 8}, at::kLong);
  ForwardOptions fo;
  fo.logits = LogitsFor::kLast;
  at::Tensor logits = model.forward(ids, fo).logits;
  return target / logits.std().item<double>();
}

}  // namespace

namespace {
nlohmann::json run_python(int threads, const std::string& batches, int64_t prompt_len,
                          int64_t new_tokens, int repeats) {
  return bench::run_python_baseline(
      "decode_throughput_eager.py",
      fmt::format("--threads {} --batches {} --prompt-len {} --new-tokens {} --repeats {}", threads,
                  batches, prompt_len, new_tokens, repeats));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    destein::app::Args args(argc, argv);
    const int threads =
        static_cast<int>(args.get_int("threads", destein::app::default_thread_count()));
    const std::string batches = args.get_or("batches", "1,25,100");
    const int64_t prompt_len = args.get_int("prompt-len", 24);
    const int64_t new_tokens = args.get_int("new-tokens", 20);
    const int repeats = static_cast<int>(args.get_int("repeats", 3));
    const bool python = !args.flag("no-python");
    const bool tiny = !args.flag("no-tiny");
    const std::string backend = args.get_or("linear-backend", "auto");
    args.finish();

    set_threads(threads);
    at::manual_seed(0);
    fmt::print("threads {}\n", threads);
    const double gflops = bench::machine_gemm_gflops(10);
    const double gbs = bench::memory_read_gbs(5);
    ModelOptions mopts;
    mopts.threads = threads;
    mopts.linear_backend = parse_linear_backend(backend);
    auto model = build_model(destein::app::random_gpt2_checkpoint(12, 768, 12, 50257, 1024), mopts);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print(
        "random GPT-2-small shape: {:.1f} M parameters; prompt {} tokens, {} new tokens, top-p "
        "0.9\n"
        "destein linear kernels: {}; OPENBLAS_CORETYPE={}\n",
        model->parameter_count() / 1e6, prompt_len, new_tokens,
        destein::linear_backend_name(model->linear_backend()),
        coretype ? coretype : "(unset: OpenBLAS detects the core)");

    nlohmann::json eager;
    if (python) eager = run_python(threads, batches, prompt_len, new_tokens, repeats);
    const auto bs = parse_batches(batches);
    report(
        *model,
        "GPT-2-small shape, random weights (flat logits: top-p 0.9 keeps most of the vocabulary)",
        bs, prompt_len, new_tokens, repeats, 0, gflops, gbs, python ? &eager : nullptr);
    const double k = sharpening(*model, 3.0);
    report(*model,
           fmt::format(
               "GPT-2-small shape, logits scaled x{:.0f} to a standard deviation of 3 (peaked)", k),
           bs, prompt_len, new_tokens, repeats, k, gflops, gbs, nullptr);
    if (tiny) {
      auto tiny_model =
          load_model(std::filesystem::path(DESTEIN_SOURCE_DIR) / "models/tiny-lm/model.pt", mopts);
      report(*tiny_model, "models/tiny-lm (trained, 5.2 M parameters)", bs, prompt_len, new_tokens,
             repeats, 0, gflops, gbs, nullptr);
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "decode_throughput: error: {}\n", e.what());
    return 1;
  }
}

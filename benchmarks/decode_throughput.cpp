// Prefill and decode throughput of destein's native forward pass against an eager PyTorch
// loop with a KV cache (benchmarks/decode_throughput_eager.py, run in the same program
// for a side-by-side ratio), on a random model of GPT-2-small shape, plus the GEMM
// GFLOP/s of the BLAS LibTorch is using.
//
//   build/bin/decode_throughput [--threads N] [--batches 1,25] [--prompt-len 24]
//                               [--new-tokens 20] [--repeats 3] [--no-python]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "args.hpp"
#include "python_baseline.hpp"
#include "random_model.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "destein/runtime/device.hpp"

using namespace destein;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double gemm_gflops(int64_t n, int repeats) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::mm(a, b);
  auto t = Clock::now();
  for (int i = 0; i < repeats; ++i) at::mm(a, b);
  return 2.0 * n * n * n * repeats / seconds_since(t) / 1e9;
}

struct Rates {
  double prefill = 0;  // tokens/s
  double decode = 0;   // tokens/s
};

// Prefill of B prompts, then new_tokens decode steps with top-p 0.9 sampling: the
// evaluation's shape at B = 25.
Rates measure(const Model& model, int64_t B, int64_t prompt_len, int64_t new_tokens) {
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

  auto t1 = Clock::now();
  std::vector<int64_t> next(static_cast<size_t>(B));
  for (int64_t step = 0; step < new_tokens; ++step) {
    at::Tensor host = logits.reshape({B, V}).contiguous();
    // Rows sampled in parallel, as destein::generate does.
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        next[b] = sample_token(host.data_ptr<float>() + b * V, V, sampling, (b + 0.5) / B);
      }
    });
    if (step + 1 == new_tokens) break;
    fo.attention_mask = mask.narrow(1, 0, prompt_len + step + 1);
    logits = model.forward(at::tensor(next, at::kLong).view({B, 1}), fo).logits;
  }
  const double decode_s = seconds_since(t1);
  return {B * prompt_len / prefill_s, B * new_tokens / decode_s};
}

nlohmann::json run_python(int threads, const std::string& batches, int64_t prompt_len, int64_t new_tokens,
                          int repeats) {
  return bench::run_python_baseline(
      "decode_throughput_eager.py", fmt::format("--threads {} --batches {} --prompt-len {} --new-tokens {} --repeats {}",
                                                threads, batches, prompt_len, new_tokens, repeats));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    destein::app::Args args(argc, argv);
    const int threads = static_cast<int>(args.get_int("threads", destein::app::default_thread_count()));
    const std::string batches = args.get_or("batches", "1,25");
    const int64_t prompt_len = args.get_int("prompt-len", 24);
    const int64_t new_tokens = args.get_int("new-tokens", 20);
    const int repeats = static_cast<int>(args.get_int("repeats", 3));
    const bool python = !args.flag("no-python");
    const std::string backend = args.get_or("linear-backend", "auto");
    args.finish();

    set_threads(threads);
    at::manual_seed(0);
    fmt::print("threads {}; GEMM 1024^3: {:.1f} GFLOP/s\n", threads, gemm_gflops(1024, 10));
    ModelOptions mopts;
    mopts.threads = threads;
    mopts.linear_backend = parse_linear_backend(backend);
    auto model = build_model(destein::app::random_gpt2_checkpoint(12, 768, 12, 50257, 1024), mopts);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print("random GPT-2-small shape: {:.1f} M parameters; prompt {} tokens, {} new tokens, top-p 0.9\n"
               "destein linear kernels: {}; OPENBLAS_CORETYPE={}\n",
               model->parameter_count() / 1e6, prompt_len, new_tokens, model->linear_backend(),
               coretype ? coretype : "(unset: OpenBLAS detects the core)");

    nlohmann::json eager;
    if (python) eager = run_python(threads, batches, prompt_len, new_tokens, repeats);

    fmt::print("\n{:>6} {:>18} {:>18} {:>10} {:>18} {:>18} {:>10}\n", "batch", "prefill tok/s", "eager prefill",
               "ratio", "decode tok/s", "eager decode", "ratio");
    size_t start = 0;
    while (start < batches.size()) {
      size_t comma = batches.find(',', start);
      if (comma == std::string::npos) comma = batches.size();
      const std::string b_text = batches.substr(start, comma - start);
      const int64_t B = std::stoll(b_text);
      start = comma + 1;
      measure(*model, B, prompt_len, 2);  // warm-up
      Rates best;
      for (int i = 0; i < repeats; ++i) {
        Rates r = measure(*model, B, prompt_len, new_tokens);
        best.prefill = std::max(best.prefill, r.prefill);
        best.decode = std::max(best.decode, r.decode);
      }
      if (python) {
        const double ep = eager["results"][b_text]["prefill_tokens_per_s"].get<double>();
        const double ed = eager["results"][b_text]["decode_tokens_per_s"].get<double>();
        fmt::print("{:>6} {:>18.1f} {:>18.1f} {:>9.2f}x {:>18.1f} {:>18.1f} {:>9.2f}x\n", B, best.prefill, ep,
                   best.prefill / ep, best.decode, ed, best.decode / ed);
      } else {
        fmt::print("{:>6} {:>18.1f} {:>18} {:>10} {:>18.1f} {:>18} {:>10}\n", B, best.prefill, "-", "-",
                   best.decode, "-", "-");
      }
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "decode_throughput: error: {}\n", e.what());
    return 1;
  }
}

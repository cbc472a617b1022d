// Training throughput of destein's trainer (destein::LmTrainer: ATen forward and
// backward, hand-written AdamW, clipping) against the same model trained with PyTorch's
// autograd and torch.optim.AdamW (benchmarks/train_throughput_eager.py), side by side in
// one run. Default shape: models/tiny-lm's (4 layers, d 256, 8 heads, context 128,
// vocabulary 8000, batch 16).
//
//   build/bin/train_throughput [--threads N] [--steps 20] [--warmup 3] [--no-python]
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "args.hpp"
#include "destein/runtime/device.hpp"
#include "python_baseline.hpp"
#include "train/lm_training.hpp"

using namespace destein;

int main(int argc, char** argv) {
  try {
    app::Args args(argc, argv);
    const int threads = static_cast<int>(args.get_int("threads", app::default_thread_count()));
    const int64_t steps = args.get_int("steps", 20);
    const int64_t warmup = args.get_int("warmup", 3);
    const bool python = !args.flag("no-python");
    args.finish();
    set_threads(threads);

    LmTrainOptions o;  // the tiny-lm shape and batch
    o.optimizer.total_steps = warmup + steps;
    o.eval_every = 0;
    o.checkpoint_every = 0;
    std::vector<int32_t> stream(1 << 20), heldout(4096);
    uint64_t x = 1;
    for (auto* s : {&stream, &heldout}) {
      for (auto& id : *s) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        id = static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(o.shape.vocab_size));
      }
    }
    const auto dir = std::filesystem::temp_directory_path() / "destein_train_throughput";
    LmTrainer trainer(o, stream, heldout, dir);
    trainer.train({}, warmup);
    const auto t = std::chrono::steady_clock::now();
    trainer.train({}, steps);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    std::filesystem::remove_all(dir);
    const double ours = static_cast<double>(steps * o.batch_size * o.shape.context) / seconds;
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print(
        "GPT-2 {} layers d {} context {} vocabulary {}, batch {}; {} threads; "
        "OPENBLAS_CORETYPE={}\n",
        o.shape.n_layers, o.shape.d_model, o.shape.context, o.shape.vocab_size, o.batch_size,
        threads, coretype ? coretype : "unset");
    fmt::print("destein train-lm step      {:>8.0f} tokens/s\n", ours);
    if (python) {
      const auto eager = bench::run_python_baseline(
          "train_throughput_eager.py",
          fmt::format("--threads {} --steps {} --warmup {}", threads, steps, warmup));
      const double theirs = eager["tokens_per_s"].get<double>();
      fmt::print(
          "PyTorch {} eager step   {:>8.0f} tokens/s\nratio destein / PyTorch     {:>8.2f}x\n",
          eager["torch"].get<std::string>(), theirs, ours / theirs);
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "train_throughput: error: {}\n", e.what());
    return 1;
  }
}

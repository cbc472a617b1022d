// The weight products of a decode step, alone: the row-stable kernel
// (libdestein/src/runtime/row_stable.cpp) against LibTorch's BLAS product on the same
// inputs (and the kernel's AVX2 path where AVX-512 is its default), for the GPT-2-small
// shapes at the decode batches, at 1 and at N threads, with the machine's GEMM and
// memory-read rates measured in the same run. Each shape prints GFLOP/s, weight GB/s and
// the fraction of the roofline limit that each kernel reaches: the slower of the FLOPs at
// the GEMM rate (the faster of BLAS and the row-stable kernel on 1024^3, kernel_rate.hpp)
// and the weight bytes at the memory rate; the last line per batch is a whole decode
// step's products (12 layers and the output head). Weights are cycled through more copies
// than any cache holds, as a decode step reads them.
//
//   build/bin/linear_kernels [--threads 2] [--batches 1,25,100] [--min-seconds 0.3]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "args.hpp"
#include "kernel_rate.hpp"
#include "machine_rate.hpp"
#include "runtime/row_stable.hpp"

using destein::bench::Clock;
using destein::bench::seconds_since;

namespace {

struct Shape {
  const char* name;
  int64_t k, n, per_step;  // per_step: how many of these one decode step runs
};

// GPT-2 small: per layer the fused QKV, the attention output, the MLP's two products;
// then the output head over the 50257-token vocabulary.
const Shape kShapes[] = {{"qkv 768x2304", 768, 2304, 12},
                         {"attn-out 768x768", 768, 768, 12},
                         {"mlp-up 768x3072", 768, 3072, 12},
                         {"mlp-down 3072x768", 3072, 768, 12},
                         {"head 768x50257", 768, 50257, 1}};

// Seconds per call: the best mean over batches of calls lasting at least min_seconds.
template <typename F>
double time_call(F&& f, double min_seconds) {
  f();
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    int calls = 0;
    auto t = Clock::now();
    do {
      f();
      ++calls;
    } while (seconds_since(t) < min_seconds / 3);
    best = std::min(best, seconds_since(t) / calls);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) try {
  destein::app::Args args(argc, argv);
  const int threads =
      static_cast<int>(args.get_int("threads", destein::app::default_thread_count()));
  std::vector<int64_t> batches = args.get_int_list("batches", "decode batches (default 1,25,100)");
  if (batches.empty()) batches = {1, 25, 100};
  const double min_seconds = args.get_double("min-seconds", 0.3);
  args.finish();

  fmt::print("row-stable kernel instruction set: {}; OPENBLAS_CORETYPE={}\n",
             destein::detail::stable_isa_name(destein::detail::stable_isa()),
             std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)");
  std::vector<int> thread_counts = {1};
  if (threads > 1) thread_counts.push_back(threads);
  for (int t : thread_counts) {
    at::set_num_threads(t);
    const double gemm = destein::bench::machine_gemm_gflops(5),
                 mem = destein::bench::memory_read_gbs(3);
    fmt::print("== {} thread(s): GEMM limit {:.1f} GFLOP/s, memory read {:.1f} GB/s ==\n", t, gemm,
               mem);
    fmt::print("{:>5} {:<18} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8} {:>7}\n", "rows", "shape",
               "stable GF", "avx2 GF", "blas GF", "stable GB", "blas GB", "stable%", "blas%",
               "s/b");
    for (int64_t m : batches) {
      double step_stable = 0, step_blas = 0, step_limit = 0;
      for (const Shape& s : kShapes) {
        // As in a decode step, the weights come from memory, not from a cache: each call
        // takes the next of enough copies (two at least) to pass 512 MiB.
        const int64_t copies = std::max<int64_t>(2, (int64_t{512} << 20) / (4 * s.k * s.n));
        std::vector<at::Tensor> w, packed;
        for (int64_t c = 0; c < copies; ++c) {
          w.push_back(at::randn({s.k, s.n}) * 0.02);
          packed.push_back(destein::detail::pack_stable_weight(w.back()));
        }
        at::Tensor bias = at::randn({s.n}) * 0.02, x = at::randn({m, s.k});
        int64_t next = 0;
        const double ts = time_call(
            [&] { destein::detail::stable_linear(x, packed[next++ % copies], s.n, bias); },
            min_seconds);
        double t2 = ts;  // the AVX2 kernel, where the default is another
        if (destein::detail::stable_isa() == destein::detail::StableIsa::kAvx512) {
          destein::detail::set_stable_isa(destein::detail::StableIsa::kAvx2);
          t2 = time_call(
              [&] { destein::detail::stable_linear(x, packed[next++ % copies], s.n, bias); },
              min_seconds);
          destein::detail::reset_stable_isa();
        }
        const double tb = time_call([&] { at::addmm(bias, x, w[next++ % copies]); }, min_seconds);
        const double flops = 2.0 * m * s.k * s.n, bytes = 4.0 * s.k * s.n;
        const double limit = std::max(flops / (gemm * 1e9), bytes / (mem * 1e9));
        fmt::print(
            "{:>5} {:<18} {:>10.1f} {:>10.1f} {:>10.1f} {:>9.1f} {:>9.1f} {:>7.0f}% {:>7.0f}% "
            "{:>6.2f}x\n",
            m, s.name, flops / ts / 1e9, flops / t2 / 1e9, flops / tb / 1e9, bytes / ts / 1e9,
            bytes / tb / 1e9, 100 * limit / ts, 100 * limit / tb, tb / ts);
        step_stable += ts * s.per_step;
        step_blas += tb * s.per_step;
        step_limit += limit * s.per_step;
      }
      fmt::print(
          "{:>5} {:<18} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7.0f}% {:>7.0f}% {:>6.2f}x   ({:.2f} / "
          "{:.2f} ms, "
          "limit {:.2f} ms)\n",
          m, "decode step", "", "", "", "", "", 100 * step_limit / step_stable,
          100 * step_limit / step_blas, step_blas / step_stable, 1e3 * step_stable, 1e3 * step_blas,
          1e3 * step_limit);
    }
  }
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "linear_kernels: error: {}\n", e.what());
  return 1;
}

// What the machine does in the same run as a benchmark, so that its figures can be read
// against the hardware (machines differ, and so does the load on a shared one).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace destein::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// GFLOP/s of `product` (worth `flops` each call): the best of three rounds of `repeats`
/// calls after two warm-up calls. On this shared VM one round can come out at half the
/// rate of the next, and a limit must be what the machine can do.
template <typename F>
double best_gflops(double flops, int repeats, F&& product) {
  product();
  product();
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    auto t = Clock::now();
    for (int i = 0; i < repeats; ++i) product();
    best = std::max(best, flops * repeats / seconds_since(t) / 1e9);
  }
  return best;
}

/// GFLOP/s of an n x n float32 matrix product, the best kernel BLAS picks here.
inline double gemm_gflops(int64_t n, int repeats) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  return best_gflops(2.0 * n * n * n, repeats, [&] { at::mm(a, b); });
}

namespace detail {

// Sum of n floats read as one sequential stream or as four interleaved ones (hardware
// prefetchers keep more lines in flight for several streams than for one, as a GEMV over
// weight panels does).
#if defined(__x86_64__)
__attribute__((target("avx2"))) inline float read_streams(const float* a, int64_t n,
                                                          bool four_streams) {
  const int64_t per = n / (four_streams ? 4 : 1) / 16 * 16;
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  if (!four_streams) {
    for (int64_t i = 0; i < per; i += 16) {
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
    }
  } else {
    for (int64_t i = 0; i < per; i += 16) {
      s0 = _mm256_add_ps(s0, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(a + i + 8)));
      s1 = _mm256_add_ps(
          s1, _mm256_add_ps(_mm256_loadu_ps(a + per + i), _mm256_loadu_ps(a + per + i + 8)));
      s2 = _mm256_add_ps(s2, _mm256_add_ps(_mm256_loadu_ps(a + 2 * per + i),
                                           _mm256_loadu_ps(a + 2 * per + i + 8)));
      s3 = _mm256_add_ps(s3, _mm256_add_ps(_mm256_loadu_ps(a + 3 * per + i),
                                           _mm256_loadu_ps(a + 3 * per + i + 8)));
    }
  }
  alignas(32) float o[8];
  _mm256_store_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
#endif

}  // namespace detail

/// Memory read rate in GB/s over 1 GiB, far past any cache, on LibTorch's threads: the
/// best of `repeats` rounds of a parallel copy (bytes read per second), a parallel sum and,
/// on x86, reads of one and of four interleaved streams per thread. A shared VM's
/// bandwidth moves by 20-30 % between seconds, so the best is the figure a kernel can
/// meet; prints each. A GEMV that streams weights is bound by this rate.
inline double memory_read_gbs(int repeats) {
  const int64_t n = int64_t{256} << 20;  // floats
  at::Tensor a = at::rand({n}), b = at::empty({n});
  b.copy_(a);
  double copy = 0, sum = 0, one = 0, four = 0;
  for (int i = 0; i < repeats; ++i) {
    auto t = Clock::now();
    b.copy_(a);
    copy = std::max(copy, n * 4.0 / seconds_since(t) / 1e9);
    t = Clock::now();
    volatile float sink = a.sum().item<float>();
    sum = std::max(sum, n * 4.0 / seconds_since(t) / 1e9);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
      const float* p = a.data_ptr<float>();
      for (bool four_streams : {false, true}) {
        std::vector<float> part(static_cast<size_t>(at::get_num_threads()), 0.0f);
        t = Clock::now();
        at::parallel_for(0, n, n / at::get_num_threads(), [&](int64_t b0, int64_t b1) {
          part[static_cast<size_t>(at::get_thread_num())] =
              detail::read_streams(p + b0, b1 - b0, four_streams);
        });
        double& best = four_streams ? four : one;
        best = std::max(best, n * 4.0 / seconds_since(t) / 1e9);
        sink = part[0];
      }
    }
#endif
    (void)sink;
  }
  const double best = std::max({copy, sum, one, four});
  fmt::print(
      "memory (1 GiB, best of {}): copy {:.1f} GB/s (bytes read per second), sum {:.1f}, read 1 "
      "stream per thread "
      "{:.1f}, 4 streams {:.1f}; limit uses {:.1f}\n",
      repeats, copy, sum, one, four, best);
  return best;
}

}  // namespace destein::bench

// What the machine does in the same run as a benchmark, so that its figures can be read
// against the hardware (machines differ, and so does the load on a shared one).
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>

namespace destein::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// GFLOP/s of an n x n float32 matrix product, the best kernel BLAS picks here.
inline double gemm_gflops(int64_t n, int repeats) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::mm(a, b);
  auto t = Clock::now();
  for (int i = 0; i < repeats; ++i) at::mm(a, b);
  return 2.0 * n * n * n * repeats / seconds_since(t) / 1e9;
}

}  // namespace destein::bench

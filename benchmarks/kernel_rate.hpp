// The GEMM rate a roofline should use on this machine: the faster of LibTorch's BLAS and
// destein's row-stable kernel on the same square product. OpenBLAS 0.3.21 runs AVX2
// kernels at best, the row-stable kernel AVX-512 where the CPU has it, so on such a CPU
// BLAS alone would understate what the hardware does and a kernel could pass 100 % of
// its "limit".
#pragma once

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>

#include "machine_rate.hpp"
#include "runtime/row_stable.hpp"

namespace destein::bench {

/// GFLOP/s of an n^3 product by the row-stable kernel (best_gflops: best of three rounds).
inline double stable_gemm_gflops(int64_t n, int repeats) {
  at::Tensor a = at::randn({n, n}), w = at::randn({n, n});
  at::Tensor packed = destein::detail::pack_stable_weight(w);
  return best_gflops(2.0 * n * n * n, repeats,
                     [&] { destein::detail::stable_linear(a, packed, n, at::Tensor()); });
}

/// The larger of the BLAS and the row-stable rate for a 1024^3 product; prints both.
inline double machine_gemm_gflops(int repeats) {
  const double blas = gemm_gflops(1024, repeats), stable = stable_gemm_gflops(1024, repeats);
  fmt::print(
      "GEMM 1024^3: BLAS {:.1f} GFLOP/s, row-stable kernel ({}) {:.1f} GFLOP/s; limit uses "
      "{:.1f}\n",
      blas, destein::detail::stable_isa_name(destein::detail::stable_isa()), stable,
      std::max(blas, stable));
  return std::max(blas, stable);
}

}  // namespace destein::bench

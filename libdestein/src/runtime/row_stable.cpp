#include "runtime/row_stable.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#define DESTEIN_X86 1
#endif

#include "check.hpp"
#include "runtime/parallel.hpp"

// This file is compiled with -ffp-contract=off (libdestein/CMakeLists.txt): the scalar and
// vector paths must round identically, so every fused multiply-add is written out.

namespace destein::detail {
namespace {

constexpr int64_t kNR = 16;   // columns per panel (two AVX2 registers, one AVX-512 register)
constexpr int64_t kKC = 256;  // depth per pass: a (256, 16) weight block is 16 KiB, in L1
constexpr int64_t kMC = 256;  // rows per pass at most: their (256, 256) input block stays in L2

// Rows per register block at most, in the many-row path: as many accumulators as the
// registers hold next to the weight vectors and a broadcast (16 ymm: 6 rows x 1 panel of
// two registers; 32 zmm: 14 rows x 2 panels of one register).
constexpr int64_t kMaxBlockRowsAvx2 = 6, kMaxBlockRowsAvx512 = 14;
int64_t max_block_rows(StableIsa isa) {
  return isa == StableIsa::kAvx512 ? kMaxBlockRowsAvx512 : kMaxBlockRowsAvx2;
}

// Panels a register block spans in the many-row path. Two panels per block on AVX-512
// halve the broadcasts per FMA (13 rows x 1 panel ran at 60 % of the kernel's peak).
int64_t block_panels(StableIsa isa) { return isa == StableIsa::kAvx512 ? 2 : 1; }

// Below this many rows the whole batch is one register block walking the full depth.
int64_t few_rows_limit(StableIsa isa) { return isa == StableIsa::kAvx512 ? 8 : 4; }

// Panels a register block of `rows` (< few_rows_limit) rows spans: enough independent
// accumulator chains (an FMA's latency times its issue rate: 8 on two FMA pipes of
// latency 4).
int64_t panels_per_block(StableIsa isa, int64_t rows) {
  if (isa == StableIsa::kAvx512) return rows == 1 ? 8 : rows <= 3 ? 4 : 2;
  return rows == 1 ? 4 : 2;
}

bool cpu_supports(StableIsa isa) {
#if DESTEIN_X86
  switch (isa) {
    case StableIsa::kScalar:
      return true;
    case StableIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case StableIsa::kAvx512:
      return __builtin_cpu_supports("avx512f");
  }
  return false;
#else
  return isa == StableIsa::kScalar;
#endif
}

StableIsa best_isa() {
  static const StableIsa best = cpu_supports(StableIsa::kAvx512) ? StableIsa::kAvx512
                                : cpu_supports(StableIsa::kAvx2) ? StableIsa::kAvx2
                                                                 : StableIsa::kScalar;
  return best;
}

std::atomic<int> g_forced_isa{-1};

// Large outputs (from 16 MiB: the output head's logits from 84 rows on; past 32 MiB
// glibc maps every one afresh) were faulted in 4 KiB pages one by one on first touch: the
// head's product at 400 rows ran at a third of its rate at 100. Transparent huge pages,
// where the kernel grants them on request, fault 2 MiB at a time.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const size_t bytes = static_cast<size_t>(t.numel()) * sizeof(float);
  if (bytes < 8 * kHuge) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr<float>());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = (begin + bytes) & ~(kHuge - 1);
  if (last > first)
    madvise(reinterpret_cast<void*>(first), last - first,
            MADV_HUGEPAGE);  // a hint: failure is harmless
#else
  (void)t;
#endif
}

// c (rows, 16 np) at stride ldc += x (rows, kc) at stride ldx times np weight panels,
// each (kc, 16), panel p at w + p * wstride; `first` starts from zero instead of c; `bias`
// (16 np) is added after the last pass.
void micro_scalar(int64_t rows, int64_t np, const float* x, int64_t ldx, const float* w,
                  int64_t wstride, int64_t kc, float* c, int64_t ldc, bool first,
                  const float* bias) {
  for (int64_t p = 0; p < np; ++p) {
    for (int64_t r = 0; r < rows; ++r) {
      float acc[kNR];
      float* cr = c + r * ldc + p * kNR;
      const float* wp = w + p * wstride;
      for (int64_t n = 0; n < kNR; ++n) acc[n] = first ? 0.0f : cr[n];
      for (int64_t k = 0; k < kc; ++k) {
        const float a = x[r * ldx + k];
        for (int64_t n = 0; n < kNR; ++n) acc[n] = std::fma(a, wp[k * kNR + n], acc[n]);
      }
      for (int64_t n = 0; n < kNR; ++n) cr[n] = bias ? acc[n] + bias[p * kNR + n] : acc[n];
    }
  }
}

#if DESTEIN_X86
// MR rows x NP panels of accumulators, all in registers: MR * NP * 2 of the 16 ymm
// registers. The unroll pragmas matter: without them GCC kept an array of accumulators
// in memory as well and stored all twelve on every k, which halved the kernel's rate.
template <int MR, int NP>
__attribute__((target("avx2,fma"))) void micro_avx2(const float* x, int64_t ldx, const float* w,
                                                    int64_t wstride, int64_t kc, float* c,
                                                    int64_t ldc, bool first, const float* bias) {
  __m256 acc[MR][NP][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        acc[r][p][h] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + p * kNR + h * 8);
      }
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const float* wk = w + p * wstride + k * kNR;
      const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256 a = _mm256_broadcast_ss(x + r * ldx + k);
        acc[r][p][0] = _mm256_fmadd_ps(a, w0, acc[r][p][0]);
        acc[r][p][1] = _mm256_fmadd_ps(a, w1, acc[r][p][1]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m256 v = acc[r][p][h];
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + p * kNR + h * 8));
        _mm256_storeu_ps(c + r * ldc + p * kNR + h * 8, v);
      }
    }
  }
}

template <int MR, int NP>
__attribute__((target("avx512f"))) void micro_avx512(const float* x, int64_t ldx, const float* w,
                                                     int64_t wstride, int64_t kc, float* c,
                                                     int64_t ldc, bool first, const float* bias) {
  __m512 acc[MR][NP];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
      acc[r][p] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc + p * kNR);
  }
  for (int64_t k = 0; k < kc; ++k) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const __m512 wv = _mm512_loadu_ps(w + p * wstride + k * kNR);
#pragma GCC unroll 32
      for (int r = 0; r < MR; ++r)
        acc[r][p] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + k]), wv, acc[r][p]);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      __m512 v = acc[r][p];
      if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + p * kNR));
      _mm512_storeu_ps(c + r * ldc + p * kNR, v);
    }
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                         bool, const float*);

// One-panel AVX-512 kernels for 1..14 rows (a partial or lone panel of any block), indexed
// by rows - 1.
template <size_t... I>
constexpr std::array<MicroFn, sizeof...(I)> avx512_one_panel(std::index_sequence<I...>) {
  return {&micro_avx512<static_cast<int>(I) + 1, 1>...};
}
constexpr auto kAvx512OnePanel = avx512_one_panel(std::make_index_sequence<kMaxBlockRowsAvx512>());
#endif

void micro(StableIsa isa, int64_t rows, int64_t np, const float* x, int64_t ldx, const float* w,
           int64_t wstride, int64_t kc, float* c, int64_t ldc, bool first, const float* bias) {
#if DESTEIN_X86
  if (isa == StableIsa::kAvx512) {
    if (np == 1 && rows >= 1 && rows <= kMaxBlockRowsAvx512) {
      return kAvx512OnePanel[rows - 1](x, ldx, w, wstride, kc, c, ldc, first, bias);
    }
    switch (rows * 10 + np) {
      case 18:
        return micro_avx512<1, 8>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 24:
        return micro_avx512<2, 4>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 34:
        return micro_avx512<3, 4>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 42:
        return micro_avx512<4, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 52:
        return micro_avx512<5, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 62:
        return micro_avx512<6, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 72:
        return micro_avx512<7, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 82:
        return micro_avx512<8, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 92:
        return micro_avx512<9, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 102:
        return micro_avx512<10, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 112:
        return micro_avx512<11, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 122:
        return micro_avx512<12, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 132:
        return micro_avx512<13, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 142:
        return micro_avx512<14, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      default:
        break;
    }
  }
  if (isa == StableIsa::kAvx2) {
    switch (rows * 10 + np) {
      case 61:
        return micro_avx2<6, 1>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 51:
        return micro_avx2<5, 1>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 41:
        return micro_avx2<4, 1>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 32:
        return micro_avx2<3, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 31:
        return micro_avx2<3, 1>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 22:
        return micro_avx2<2, 2>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 21:
        return micro_avx2<2, 1>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 14:
        return micro_avx2<1, 4>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      case 11:
        return micro_avx2<1, 1>(x, ldx, w, wstride, kc, c, ldc, first, bias);
      default:
        break;
    }
  }
#endif
  micro_scalar(rows, np, x, ldx, w, wstride, kc, c, ldc, first, bias);
}

}  // namespace

StableIsa stable_isa() {
  const int forced = g_forced_isa.load(std::memory_order_relaxed);
  return forced < 0 ? best_isa() : static_cast<StableIsa>(forced);
}

const char* stable_isa_name(StableIsa isa) {
  switch (isa) {
    case StableIsa::kScalar:
      return "scalar";
    case StableIsa::kAvx2:
      return "avx2";
    case StableIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool stable_isa_supported(StableIsa isa) { return cpu_supports(isa); }

void set_stable_isa(StableIsa isa) {
  if (!cpu_supports(isa)) {
    throw std::invalid_argument(std::string("row-stable kernels: this CPU does not run ") +
                                stable_isa_name(isa));
  }
  g_forced_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

void reset_stable_isa() { g_forced_isa.store(-1, std::memory_order_relaxed); }

at::Tensor pack_stable_weight(const at::Tensor& weight_t) {
  DESTEIN_CHECK_ARG(
      weight_t.dim() == 2 && weight_t.scalar_type() == at::kFloat && weight_t.device().is_cpu(),
      "pack_stable_weight: expected a (K, N) float32 cpu tensor, found {} {}",
      c10::str(weight_t.sizes()), c10::toString(weight_t.scalar_type()));
  const int64_t K = weight_t.size(0), N = weight_t.size(1), NB = (N + kNR - 1) / kNR;
  at::Tensor padded = at::zeros({K, NB * kNR}, at::kFloat);
  padded.narrow(1, 0, N).copy_(weight_t);
  return padded.view({K, NB, kNR}).permute({1, 0, 2}).contiguous();  // (NB, K, 16)
}

at::Tensor stable_linear(const at::Tensor& x, const at::Tensor& packed, int64_t N,
                         const at::Tensor& bias) {
  DESTEIN_CHECK_ARG(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
                    "stable_linear: x must be (M, K) float32 contiguous");
  const int64_t M = x.size(0), K = x.size(1), NB = packed.size(0);
  DESTEIN_CHECK_ARG(packed.size(1) == K && NB * kNR >= N,
                    "stable_linear: packed weight {} does not fit x {}", c10::str(packed.sizes()),
                    c10::str(x.sizes()));
  at::Tensor y = at::empty({M, N}, at::kFloat);
  if (M == 0) return y;
  advise_huge_pages(y);
  const float* xp = x.data_ptr<float>();
  const float* wp = packed.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const StableIsa isa = stable_isa();
  const int64_t block_rows = max_block_rows(isa), bp_panels = block_panels(isa);
  // Threads split the column panels; rows and depth are walked the same way in every
  // thread, so the split changes nothing in any element's chain. The grain is set by work,
  // not rows: a thread takes panels worth at least ~256K multiply-adds (about 1 MB of
  // weights at one row: tens of microseconds, well above the cost of waking a thread). A
  // grain of 8192 / M panels left every projection of a 1-row or 25-row decode step on one
  // thread (a 2304-wide QKV projection has 144 panels).
  const int64_t panel_work = std::max<int64_t>(1, M * K * kNR);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / panel_work);
  // Every pass streams the weights once more, so the passes are evened out: 300 rows are
  // two passes of 150, not 256 + 44.
  const int64_t passes = (M + kMC - 1) / kMC, pass_rows = (M + passes - 1) / passes;
  const int64_t depth_blocks = (K + kKC - 1) / kKC;
  // The many-row path reads its inputs from a copy, once for all threads: a pass's rows in
  // depth blocks of (rows, kKC) at a stride of kKC + 16 floats. Read in place, rows of 3072
  // floats (12 KiB apart) fall into the same L1 sets and a block of 20 rows evicted itself
  // (the 3072-deep product ran at 2/3 the rate of the 768-deep ones).
  constexpr int64_t ldp = kKC + 16;
  thread_local std::vector<float> packed_x;  // the calling thread's, reused across calls
  if (M >= few_rows_limit(isa)) {
    packed_x.resize(static_cast<size_t>(M * depth_blocks * ldp));
    for (int64_t i0 = 0; i0 < M; i0 += pass_rows) {
      const int64_t mc = std::min(pass_rows, M - i0);
      float* pass_x = packed_x.data() + i0 * depth_blocks * ldp;
      for (int64_t kb = 0; kb < depth_blocks; ++kb) {
        const int64_t k0 = kb * kKC, kc = std::min(kKC, K - k0);
        for (int64_t r = 0; r < mc; ++r) {
          std::memcpy(pass_x + (kb * mc + r) * ldp, xp + (i0 + r) * K + k0, kc * sizeof(float));
        }
      }
    }
  }
  // Workers must not name packed_x: a thread_local is each thread's own.
  const float* xpacked = packed_x.data();
  at::parallel_for(0, NB, grain, [&](int64_t jb0, int64_t jb1) {
    float tail[kMaxBlockRowsAvx512 * kNR];  // a block of any instruction set
    float tail_bias[kNR];
    // One panel of `rows` rows from row i (their inputs at xs, stride ldx) over depth
    // [k0, k0 + kc); the last, partial panel goes through a 16-wide buffer.
    auto one_panel = [&](int64_t rows, int64_t i, const float* xs, int64_t ldx, int64_t jb,
                         int64_t k0, int64_t kc, bool first, bool last) {
      const float* w = wp + (jb * K + k0) * kNR;
      const int64_t n0 = jb * kNR, nw = std::min(kNR, N - n0);
      if (nw == kNR) {
        micro(isa, rows, 1, xs, ldx, w, 0, kc, yp + i * N + n0, N, first,
              last && bp ? bp + n0 : nullptr);
        return;
      }
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t n = 0; n < kNR; ++n)
          tail[r * kNR + n] = n < nw && !first ? yp[(i + r) * N + n0 + n] : 0.0f;
      }
      for (int64_t n = 0; n < kNR; ++n) tail_bias[n] = bp && n < nw ? bp[n0 + n] : 0.0f;
      micro(isa, rows, 1, xs, ldx, w, 0, kc, tail, kNR, first, last && bp ? tail_bias : nullptr);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(yp + (i + r) * N + n0, tail + r * kNR, nw * sizeof(float));
    };
    if (M < few_rows_limit(isa)) {
      const int64_t np = panels_per_block(isa, M);
      // Few rows (a decode step of one or a few sequences): the weights stream from memory
      // once, each panel walked over the whole depth, several panels per register block so
      // that enough accumulator chains run side by side.
      const int64_t full_panels = N / kNR;
      int64_t jb = jb0;
      for (; jb + np <= std::min(jb1, full_panels); jb += np) {
        micro(isa, M, np, xp, K, wp + jb * K * kNR, K * kNR, K, yp + jb * kNR, N, true,
              bp ? bp + jb * kNR : nullptr);
      }
      for (; jb < jb1; ++jb) one_panel(M, 0, xp, K, jb, 0, K, true, true);
      return;
    }
    for (int64_t i0 = 0; i0 < M; i0 += pass_rows) {
      const int64_t mc = std::min(pass_rows, M - i0);
      const float* pass_x = xpacked + i0 * depth_blocks * ldp;
      // Panels in groups of 16 (256 columns): the group's accumulators, (rows, 256), stay
      // in L2 while the depth blocks go by, instead of every panel of the thread.
      for (int64_t g0 = jb0; g0 < jb1; g0 += 16) {
        const int64_t g1 = std::min(jb1, g0 + 16);
        for (int64_t k0 = 0; k0 < K; k0 += kKC) {
          const int64_t kc = std::min(kKC, K - k0);
          const bool first = k0 == 0, last = k0 + kc == K;
          for (int64_t jb = g0; jb < g1;) {
            const int64_t np = jb + bp_panels <= g1 && (jb + bp_panels) * kNR <= N ? bp_panels : 1;
            // Rows in blocks of at most block_rows, evened out (25 rows on AVX2: five blocks
            // of 5, not four of 6 and a lone row running at a sixth of the speed). The block
            // size changes no element's chain.
            const int64_t nblocks = (mc + block_rows - 1) / block_rows, small = mc / nblocks,
                          big_blocks = mc % nblocks;
            for (int64_t blk = 0, i = i0; blk < nblocks; ++blk) {
              const int64_t rows = small + (blk < big_blocks ? 1 : 0);
              const float* xs = pass_x + ((k0 / kKC) * mc + (i - i0)) * ldp;
              if (np == 1) {
                one_panel(rows, i, xs, ldp, jb, k0, kc, first, last);
              } else {
                micro(isa, rows, np, xs, ldp, wp + (jb * K + k0) * kNR, K * kNR, kc,
                      yp + i * N + jb * kNR, N, first, last && bp ? bp + jb * kNR : nullptr);
              }
              i += rows;
            }
            jb += np;
          }
        }
      }
    }
  });
  return y;
}

namespace {

// Dot product with 8 lanes (lane = d mod 8), each one fma chain, summed in a fixed tree.
float dot_scalar(const float* a, const float* b, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t d = 0; d < n; ++d) lane[d % 8] = std::fma(a[d], b[d], lane[d % 8]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// z (n) = fma(p, v, z), lane by lane.
void axpy_scalar(float p, const float* v, float* z, int64_t n) {
  for (int64_t d = 0; d < n; ++d) z[d] = std::fma(p, v[d], z[d]);
}

#if DESTEIN_X86
__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  alignas(32) float lane[8];
  _mm256_store_ps(lane, acc);
  for (; d < n; ++d) lane[d % 8] = std::fma(a[d], b[d], lane[d % 8]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float p, const float* v, float* z, int64_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    _mm256_storeu_ps(z + d, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + d), _mm256_loadu_ps(z + d)));
  for (; d < n; ++d) z[d] = std::fma(p, v[d], z[d]);
}
#endif

}  // namespace

at::Tensor stable_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& key_mask, int64_t past, int64_t window) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dh = q.size(3);
  const int64_t Hkv = keys.size(1), G = H / Hkv, total = past + T;
  DESTEIN_CHECK_ARG(q.is_contiguous() && q.scalar_type() == at::kFloat &&
                        keys.scalar_type() == at::kFloat && values.scalar_type() == at::kFloat &&
                        keys.stride(3) == 1 && (keys.stride(2) == Dh || keys.size(2) == 1) &&
                        values.stride(3) == 1 && (values.stride(2) == Dh || values.size(2) == 1) &&
                        keys.size(2) >= total,
                    "stable_attention: unexpected layout");
  at::Tensor mask = key_mask.to(at::kBool).contiguous();
  DESTEIN_CHECK_ARG(mask.size(0) == B && mask.size(1) == total,
                    "stable_attention: key_mask must be ({}, {})", B, total);
  at::Tensor z = at::empty({B, T, H, Dh}, at::kFloat);
  const float* qp = q.data_ptr<float>();
  const float* kp = keys.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  const bool* mp = mask.data_ptr<bool>();
  float* zp = z.data_ptr<float>();
  const int64_t ks0 = keys.stride(0), ks1 = keys.stride(1), vs0 = values.stride(0),
                vs1 = values.stride(1);
  const bool vec = stable_isa() != StableIsa::kScalar;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> visible;
    std::vector<float> score;
    visible.reserve(static_cast<size_t>(total));
    score.reserve(static_cast<size_t>(total));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / G;
      const float* kb = kp + b * ks0 + g * ks1;
      const float* vb = vp + b * vs0 + g * vs1;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t pos = past + t;
        const float* qv = qp + ((b * T + t) * H + h) * Dh;
        float* out = zp + ((b * T + t) * H + h) * Dh;
        std::fill(out, out + Dh, 0.0f);
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        visible.clear();
        for (int64_t j = lo; j <= pos; ++j) {
          if (mp[b * total + j]) visible.push_back(j);
        }
        if (visible.empty()) continue;
        score.resize(visible.size());
        float m = -std::numeric_limits<float>::infinity();
        for (size_t i = 0; i < visible.size(); ++i) {
          const float* k = kb + visible[i] * Dh;
#if DESTEIN_X86
          score[i] = vec ? dot_avx2(qv, k, Dh) : dot_scalar(qv, k, Dh);
#else
          score[i] = dot_scalar(qv, k, Dh);
#endif
          m = std::max(m, score[i]);
        }
        float sum = 0.0f;
        for (size_t i = 0; i < visible.size(); ++i) {
          score[i] = std::exp(score[i] - m);
          sum += score[i];
        }
        for (size_t i = 0; i < visible.size(); ++i) {
          const float* v = vb + visible[i] * Dh;
#if DESTEIN_X86
          if (vec) {
            axpy_avx2(score[i], v, out, Dh);
            continue;
          }
#endif
          axpy_scalar(score[i], v, out, Dh);
        }
        const float inv = 1.0f / sum;
        for (int64_t d = 0; d < Dh; ++d) out[d] *= inv;
      }
    }
  });
  return z;
}

}  // namespace destein::detail

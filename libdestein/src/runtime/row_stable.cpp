#include "runtime/row_stable.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define DESTEIN_X86 1
#endif

#include "check.hpp"

// This file is compiled with -ffp-contract=off (libdestein/CMakeLists.txt): the scalar and
// vector paths must round identically, so every fused multiply-add is written out.

namespace destein::detail {
namespace {

constexpr int64_t kNR = 16;   // columns per panel (two AVX2 registers)
constexpr int64_t kMR = 6;    // rows per register block
constexpr int64_t kKC = 256;  // depth per pass: a (256, 16) weight block is 16 KiB, in L1
constexpr int64_t kMC = 256;  // rows per pass at most: their (256, 256) input block stays in L2

bool cpu_has_avx2_fma() {
#if DESTEIN_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

// c (rows, 16) at stride ldc += x (rows, kc) at stride ldx times w (kc, 16); `first`
// starts from zero instead of c; `bias` (16) is added after the last pass.
void micro_scalar(int64_t rows, const float* x, int64_t ldx, const float* w, int64_t kc, float* c, int64_t ldc,
                  bool first, const float* bias) {
  for (int64_t r = 0; r < rows; ++r) {
    float acc[kNR];
    for (int64_t n = 0; n < kNR; ++n) acc[n] = first ? 0.0f : c[r * ldc + n];
    for (int64_t k = 0; k < kc; ++k) {
      const float a = x[r * ldx + k];
      for (int64_t n = 0; n < kNR; ++n) acc[n] = std::fma(a, w[k * kNR + n], acc[n]);
    }
    for (int64_t n = 0; n < kNR; ++n) c[r * ldc + n] = bias ? acc[n] + bias[n] : acc[n];
  }
}

#if DESTEIN_X86
template <int MR>
__attribute__((target("avx2,fma"))) void micro_avx2(const float* x, int64_t ldx, const float* w, int64_t kc,
                                                    float* c, int64_t ldc, bool first, const float* bias) {
  __m256 acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc);
    acc[r][1] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + 8);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_loadu_ps(w + k * kNR), w1 = _mm256_loadu_ps(w + k * kNR + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * ldx + k);
      acc[r][0] = _mm256_fmadd_ps(a, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, w1, acc[r][1]);
    }
  }
  if (bias) {
    const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_add_ps(acc[r][0], b0);
      acc[r][1] = _mm256_add_ps(acc[r][1], b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(c + r * ldc, acc[r][0]);
    _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
  }
}
#endif

void micro(bool vec, int64_t rows, const float* x, int64_t ldx, const float* w, int64_t kc, float* c, int64_t ldc,
           bool first, const float* bias) {
#if DESTEIN_X86
  if (vec) {
    switch (rows) {
      case 6: return micro_avx2<6>(x, ldx, w, kc, c, ldc, first, bias);
      case 5: return micro_avx2<5>(x, ldx, w, kc, c, ldc, first, bias);
      case 4: return micro_avx2<4>(x, ldx, w, kc, c, ldc, first, bias);
      case 3: return micro_avx2<3>(x, ldx, w, kc, c, ldc, first, bias);
      case 2: return micro_avx2<2>(x, ldx, w, kc, c, ldc, first, bias);
      case 1: return micro_avx2<1>(x, ldx, w, kc, c, ldc, first, bias);
      default: break;
    }
  }
#endif
  micro_scalar(rows, x, ldx, w, kc, c, ldc, first, bias);
}

}  // namespace

bool stable_kernels_vectorized() { return cpu_has_avx2_fma(); }

at::Tensor pack_stable_weight(const at::Tensor& weight_t) {
  DESTEIN_CHECK_ARG(weight_t.dim() == 2 && weight_t.scalar_type() == at::kFloat && weight_t.device().is_cpu(),
                    "pack_stable_weight: expected a (K, N) float32 cpu tensor, found {} {}",
                    c10::str(weight_t.sizes()), c10::toString(weight_t.scalar_type()));
  const int64_t K = weight_t.size(0), N = weight_t.size(1), NB = (N + kNR - 1) / kNR;
  at::Tensor padded = at::zeros({K, NB * kNR}, at::kFloat);
  padded.narrow(1, 0, N).copy_(weight_t);
  return padded.view({K, NB, kNR}).permute({1, 0, 2}).contiguous();  // (NB, K, 16)
}

at::Tensor stable_linear(const at::Tensor& x, const at::Tensor& packed, int64_t N, const at::Tensor& bias) {
  DESTEIN_CHECK_ARG(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
                    "stable_linear: x must be (M, K) float32 contiguous");
  const int64_t M = x.size(0), K = x.size(1), NB = packed.size(0);
  DESTEIN_CHECK_ARG(packed.size(1) == K && NB * kNR >= N, "stable_linear: packed weight {} does not fit x {}",
                    c10::str(packed.sizes()), c10::str(x.sizes()));
  at::Tensor y = at::empty({M, N}, at::kFloat);
  if (M == 0) return y;
  const float* xp = x.data_ptr<float>();
  const float* wp = packed.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const bool vec = cpu_has_avx2_fma();
  // Threads split the column panels; rows and depth are walked the same way in every
  // thread, so the split changes nothing in any element's chain. The grain is set by work,
  // not rows: a thread takes panels worth at least ~1M multiply-adds (tens of
  // microseconds, well above the cost of waking a thread). A grain of 8192 / M panels left
  // every projection of a 1-row or 25-row decode step on one thread (a 2304-wide QKV
  // projection has 144 panels).
  const int64_t panel_work = std::max<int64_t>(1, M * K * kNR);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / panel_work);
  at::parallel_for(0, NB, grain, [&](int64_t jb0, int64_t jb1) {
    float tail[kMR * kNR];
    float tail_bias[kNR];
    // Every pass streams the weights once more, so the passes are evened out: 300 rows are
    // two passes of 150, not 256 + 44.
    const int64_t passes = (M + kMC - 1) / kMC, pass_rows = (M + passes - 1) / passes;
    for (int64_t i0 = 0; i0 < M; i0 += pass_rows) {
      const int64_t mc = std::min(pass_rows, M - i0);
      // Panels in groups of 16 (256 columns): the group's accumulators, (rows, 256), stay
      // in L2 while the depth blocks go by, instead of every panel of the thread.
      for (int64_t g0 = jb0; g0 < jb1; g0 += 16) {
        const int64_t g1 = std::min(jb1, g0 + 16);
        for (int64_t k0 = 0; k0 < K; k0 += kKC) {
          const int64_t kc = std::min(kKC, K - k0);
          const bool first = k0 == 0, last = k0 + kc == K;
          for (int64_t jb = g0; jb < g1; ++jb) {
            const float* w = wp + (jb * K + k0) * kNR;
            const int64_t n0 = jb * kNR, nw = std::min(kNR, N - n0);
            // Rows in blocks of at most kMR, evened out (25 rows: five blocks of 5, not four
            // of 6 and a lone row running at a sixth of the speed). The block size changes
            // no element's chain.
            const int64_t nblocks = (mc + kMR - 1) / kMR, small = mc / nblocks, big_blocks = mc % nblocks;
            for (int64_t blk = 0, i = i0; blk < nblocks; ++blk) {
              const int64_t rows = small + (blk < big_blocks ? 1 : 0);
              const int64_t i_next = i + rows;
              const float* xs = xp + i * K + k0;
              if (nw == kNR) {
                micro(vec, rows, xs, K, w, kc, yp + i * N + n0, N, first, last && bp ? bp + n0 : nullptr);
                i = i_next;
                continue;
              }
              // Last, partial panel: through a 16-wide buffer.
              for (int64_t r = 0; r < rows; ++r) {
                for (int64_t n = 0; n < kNR; ++n) tail[r * kNR + n] = n < nw && !first ? yp[(i + r) * N + n0 + n] : 0.0f;
              }
              for (int64_t n = 0; n < kNR; ++n) tail_bias[n] = bp && n < nw ? bp[n0 + n] : 0.0f;
              micro(vec, rows, xs, K, w, kc, tail, kNR, first, last && bp ? tail_bias : nullptr);
              for (int64_t r = 0; r < rows; ++r) std::memcpy(yp + (i + r) * N + n0, tail + r * kNR, nw * sizeof(float));
              i = i_next;
            }
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
  for (; d + 8 <= n; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  alignas(32) float lane[8];
  _mm256_store_ps(lane, acc);
  for (; d < n; ++d) lane[d % 8] = std::fma(a[d], b[d], lane[d % 8]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float p, const float* v, float* z, int64_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) _mm256_storeu_ps(z + d, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + d), _mm256_loadu_ps(z + d)));
  for (; d < n; ++d) z[d] = std::fma(p, v[d], z[d]);
}
#endif

}  // namespace

at::Tensor stable_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& key_mask, int64_t past, int64_t window) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dh = q.size(3);
  const int64_t Hkv = keys.size(1), G = H / Hkv, total = past + T;
  DESTEIN_CHECK_ARG(q.is_contiguous() && q.scalar_type() == at::kFloat && keys.scalar_type() == at::kFloat &&
                        values.scalar_type() == at::kFloat && keys.stride(3) == 1 &&
                        (keys.stride(2) == Dh || keys.size(2) == 1) && values.stride(3) == 1 &&
                        (values.stride(2) == Dh || values.size(2) == 1) && keys.size(2) >= total,
                    "stable_attention: unexpected layout");
  at::Tensor mask = key_mask.to(at::kBool).contiguous();
  DESTEIN_CHECK_ARG(mask.size(0) == B && mask.size(1) == total, "stable_attention: key_mask must be ({}, {})", B,
                    total);
  at::Tensor z = at::empty({B, T, H, Dh}, at::kFloat);
  const float* qp = q.data_ptr<float>();
  const float* kp = keys.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  const bool* mp = mask.data_ptr<bool>();
  float* zp = z.data_ptr<float>();
  const int64_t ks0 = keys.stride(0), ks1 = keys.stride(1), vs0 = values.stride(0), vs1 = values.stride(1);
  const bool vec = cpu_has_avx2_fma();
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

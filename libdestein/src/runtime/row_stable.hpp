#pragma once
// Kernels whose result for one row of a batch does not depend on the other rows: the
// weight products and the attention of the native forward pass on CPU float32.
//
// Why: OpenBLAS (and oneDNN) pick register blocks, tail kernels and thread splits by the
// number of rows, so the same input row gives results differing in the last bits when it
// is multiplied as row 3 of 25 or as row 78 of 100; a left-padded batch also shifts a
// row's keys inside the vectors of a masked softmax. Either flips a sampled token now and
// then, and evaluation results would depend on how many prompts share a forward pass.
// Here every output element is one fixed chain of fused multiply-adds over its own
// inputs, whatever the row count, the row's position, the padding or the thread split.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace destein::detail {

/// A (K, N) float32 weight packed for stable_linear: panels of 16 columns, each (K, 16)
/// contiguous, the last one zero-padded. Shape (ceil(N / 16), K, 16).
at::Tensor pack_stable_weight(const at::Tensor& weight_t);

/// y = x W + bias, x (M, K) f32 CPU contiguous, packed from pack_stable_weight of W (K, N),
/// bias (N) or undefined. Returns (M, N) f32. Row i of y depends only on row i of x:
/// y[i][n] = bias[n] + fma-chain over k = 0..K-1 of x[i][k] * W[k][n], in that order.
at::Tensor stable_linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                         const at::Tensor& bias);

/// Causal attention of each query over exactly its own allowed keys, in timeline order.
/// q (B, T, H, Dh) f32 contiguous, already scaled; keys, values (B, Hkv, S, Dh) f32 with
/// contiguous (S, Dh) planes (S >= past + T); key_mask (B, past + T) bool, true = real
/// token; query t sits at timeline position past + t and sees key j when key_mask[b][j],
/// j <= past + t and, with a window w > 0, j > past + t - w. Returns z (B, T, H, Dh) f32.
/// A query with no visible key (left padding) gets zeros.
at::Tensor stable_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& key_mask, int64_t past, int64_t window);

/// The instruction sets of the row-stable kernels. All give the same bits (each element is
/// the same chain of fused multiply-adds); they differ in speed only.
enum class StableIsa { kScalar, kAvx2, kAvx512 };

/// The set the kernels use: the best this CPU runs (AVX-512F, else AVX2 + FMA, else
/// scalar), unless set_stable_isa chose another.
StableIsa stable_isa();
/// "scalar", "avx2" or "avx512".
const char* stable_isa_name(StableIsa isa);
/// True when this CPU runs `isa`.
bool stable_isa_supported(StableIsa isa);
/// Forces the kernels onto `isa` (tests compare the paths, benchmarks time them); throws
/// std::invalid_argument when the CPU lacks it. Not for use while kernels run.
void set_stable_isa(StableIsa isa);
/// Back to the best the CPU runs.
void reset_stable_isa();

}  // namespace destein::detail

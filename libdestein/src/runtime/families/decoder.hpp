// Private: the one forward pass every decoder-only family runs. A family file maps its
// checkpoint names onto DecoderWeights and picks the Architecture pieces; everything that
// touches activations, hooks and the KV cache lives in decoder.cpp, so every family and
// every code path (prefill, cached decode) goes through the same hook calls.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/model.hpp"
#include "runtime/family_options.hpp"

namespace destein {

// kRMSNormPlusOne: Gemma's RMSNorm, x / rms(x) * (1 + w), all in float32.
enum class NormKind { kLayerNorm, kRMSNorm, kRMSNormPlusOne };
enum class PositionKind { kLearned, kRotary, kNone };
enum class MlpKind { kPlain, kGated };

struct Linear {
  at::Tensor weight;  // (out, in) as loaded; replaced by weight_t once prepared
  at::Tensor bias;    // (out) or undefined
  // (in, out) contiguous: x W^T as one plain GEMM, measured 1.3-2.5x faster than the
  // transposed product for the skinny matrices of decoding.
  at::Tensor weight_t;
  // oneDNN-packed copy (CPU float32), used for products of >= kPackedMinRows rows, where
  // LibTorch's oneDNN kernels beat a BLAS that does not recognise the CPU 2-5x.
  at::Tensor packed_weight;
  at::Tensor packed_bias;
  // Panels for the row-stable kernel (runtime/row_stable.hpp), CPU float32 with the
  // "stable" backend; weight_t is dropped then, so the layer weights are held once.
  at::Tensor stable_weight;
  int64_t out_features = 0;
};

struct Norm {
  at::Tensor weight;  // (d)
  at::Tensor bias;    // (d) or undefined (RMSNorm)
};

struct LayerWeights {
  Norm attn_norm;
  Norm mlp_norm;
  Linear qkv;           // (H*Dh + 2*Hkv*Dh, d): q, k, v stacked so one GEMM computes all three
  Linear out;           // (d, H*Dh)
  Linear fc_in;         // plain: (F, d); gated: (2F, d) = [gate; up]
  Linear fc_out;        // (d, F)
  Norm q_norm;          // MPT qk_ln: (H*Dh), one LayerNorm of all query heads together;
                        // Qwen3 / Gemma 3 (Architecture::qk_norm_per_head): (Dh), each head alone
  Norm k_norm;          // (Hkv*Dh) or (Dh)
  Norm post_attn_norm;  // Gemma: norm of the attention output before the residual add
  Norm post_mlp_norm;   // Gemma: norm of the MLP output before the residual add
};

struct DecoderWeights {
  at::Tensor token_embedding;     // (V, E)
  at::Tensor position_embedding;  // (P, d), learned positions only
  int64_t position_offset = 0;    // OPT looks up position + 2
  Linear project_in;              // (d, E) when E != d (OPT-350m)
  Linear project_out;             // (E, d)
  Norm final_norm;                // undefined weight: no final norm
  at::Tensor lm_head;             // (V, E)
  std::vector<LayerWeights> layers;
};

struct Architecture {
  NormKind norm = NormKind::kLayerNorm;
  PositionKind positions = PositionKind::kLearned;
  MlpKind mlp = MlpKind::kPlain;
  std::string activation = "gelu_new";
  bool pre_norm = true;
  bool alibi = false;  // MPT: per-head linear bias on key distance
  double alibi_bias_max = 8.0;
  std::optional<double> clip_qkv;  // MPT: clamp the fused q, k, v
  double softmax_scale = 0.0;      // 0: 1 / sqrt(Dh)
  double logit_scale = 1.0;
  bool qk_norm_per_head = false;        // q_norm / k_norm of kind `norm` over each head's Dh
  double embedding_scale = 0.0;         // Gemma: embeddings times sqrt(d) in their dtype; 0: none
  std::optional<double> attn_softcap;   // Gemma 2: scores = c tanh(scores / c)
  std::optional<double> final_softcap;  // Gemma 2: logits = c tanh(logits / c)
  RopeScaling rope_scaling;             // of rope_theta; Gemma 3: its global layers only
  double rope_local_theta = 0.0;        // Gemma 3: the sliding layers' RoPE base (0: rope_theta)
  std::vector<bool> sliding_layers;     // where config.sliding_window applies; empty: every layer
};

/// Hands out checkpoint tensors by name, checking shapes and converting to the compute
/// dtype and device; errors name the parameter, the expected and the found shape.
class WeightFetcher {
 public:
  WeightFetcher(const Checkpoint& checkpoint, const ModelOptions& options);
  bool has(const std::string& name) const;
  /// `shape` empty: any shape.
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape);
  at::Tensor get_optional(const std::string& name, const std::vector<int64_t>& shape);
  const ModelConfig& config() const { return checkpoint_.config; }
  std::string source() const { return checkpoint_.source.string(); }

 private:
  const Checkpoint& checkpoint_;
  ModelOptions options_;
};

using FamilyBuilder =
    std::function<void(WeightFetcher& fetch, Architecture& arch, DecoderWeights& weights)>;

// One per family file. Referenced by name from the factory (not self-registered: a
// static library would drop an object file nothing refers to).
void build_gpt2(WeightFetcher& fetch, Architecture& arch, DecoderWeights& weights);
void build_llama(WeightFetcher& fetch, Architecture& arch, DecoderWeights& weights);
void build_opt(WeightFetcher& fetch, Architecture& arch, DecoderWeights& weights);
void build_mpt(WeightFetcher& fetch, Architecture& arch, DecoderWeights& weights);
void build_gemma(WeightFetcher& fetch, Architecture& arch, DecoderWeights& weights);

/// RoPE inverse frequencies (Dh/2) float32 for base `theta`, with Hugging Face's linear or
/// llama3 scaling (rope_utils: computed in float32 in the same order).
at::Tensor rope_inv_freq(double theta, int64_t head_dim, const RopeScaling& scaling);

/// MPT's ALiBi slopes (MosaicML gen_slopes): for H' = the next power of two >= H,
/// s_i = 2^(-alibi_bias_max * i / H'), i = 1..H'; when H' != H the odd-indexed slopes
/// (s_2, s_4, ...) come first, then s_1, s_3, ..., cut to H. (H) float32.
at::Tensor alibi_slopes(int64_t n_heads, double alibi_bias_max);

class DecoderModel : public Model {
 public:
  DecoderModel(ModelConfig config, Architecture arch, DecoderWeights weights,
               const ModelOptions& options);
  ForwardOutput forward(const at::Tensor& input_ids, const ForwardOptions& options) const override;
  KVCache make_cache(int64_t batch, int64_t capacity) const override;

 private:
  at::Tensor norm(const at::Tensor& x, const Norm& n) const;
  void prepare_linears(bool pack, bool stable);
  at::Tensor mlp(const at::Tensor& x, const LayerWeights& w) const;

  Architecture arch_;
  DecoderWeights weights_;
  // Sliding window of layer l (0: none).
  int64_t window_of(int64_t layer) const;
  // (Dh/2) f32, rotary only: [0] rope_theta with rope_scaling, [1] Gemma 3's local base.
  std::vector<at::Tensor> inv_freqs_;
  std::vector<int> layer_rope_;  // per layer, the index into inv_freqs_
  at::Tensor slopes_;            // (1, H, 1, 1) f32, ALiBi only
  Linear lm_head_;               // the output head as a Linear (packed when the backend allows)
  bool stable_ = false;          // row-stable linears and attention (CPU float32)
};

}  // namespace destein

// MPT (MosaicML): pre-LayerNorm (weight only when no_bias), ALiBi instead of position
// embeddings (or learned positions when alibi is off), fused Wqkv with optional clip_qkv
// and qk_ln, exact-GELU MLP, tied output head scaled by logit_scale. MPT's
// low_precision_layernorm is LayerNorm run in the autocast dtype: LayerNorm here.
#include "runtime/families/decoder.hpp"

#include <ATen/ATen.h>

namespace destein {

void build_mpt(WeightFetcher& fetch, Architecture& arch, DecoderWeights& w) {
  const ModelConfig& c = fetch.config();
  const std::string p = fetch.has("transformer.wte.weight") ? "transformer." : "";
  const int64_t d = c.d_model, f = c.d_ff, v = c.vocab_size;
  arch.norm = NormKind::kLayerNorm;
  // MPT turns learned_pos_emb off whenever alibi is on (MPTConfig._validate_config).
  arch.positions = (!c.alibi && c.learned_positions) ? PositionKind::kLearned : PositionKind::kNone;
  arch.mlp = MlpKind::kPlain;
  arch.activation = c.activation;
  arch.pre_norm = true;
  arch.alibi = c.alibi;
  arch.alibi_bias_max = c.alibi_bias_max;
  arch.clip_qkv = c.clip_qkv;
  arch.softmax_scale = c.softmax_scale.value_or(0.0);
  arch.logit_scale = c.logit_scale;

  // Biases and norm biases exist exactly when no_bias is false.
  auto bias = [&](const std::string& name, int64_t n) {
    return c.bias ? fetch.get(name, {n}) : at::Tensor();
  };
  auto norm = [&](const std::string& name, int64_t n) {
    return Norm{fetch.get(name + ".weight", {n}), bias(name + ".bias", n)};
  };
  w.token_embedding = fetch.get(p + "wte.weight", {v, d});
  if (arch.positions == PositionKind::kLearned)
    w.position_embedding = fetch.get(p + "wpe.weight", {c.max_positions, d});
  w.final_norm = norm(p + "norm_f", d);
  w.lm_head = c.tie_word_embeddings ? w.token_embedding : fetch.get("lm_head.weight", {v, d});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string l = p + "blocks." + std::to_string(i) + ".";
    LayerWeights lw;
    lw.attn_norm = norm(l + "norm_1", d);
    lw.mlp_norm = norm(l + "norm_2", d);
    lw.qkv = {fetch.get(l + "attn.Wqkv.weight", {3 * d, d}), bias(l + "attn.Wqkv.bias", 3 * d)};
    lw.out = {fetch.get(l + "attn.out_proj.weight", {d, d}), bias(l + "attn.out_proj.bias", d)};
    if (c.qk_ln) {
      lw.q_norm = norm(l + "attn.q_ln", d);
      lw.k_norm = norm(l + "attn.k_ln", d);
    }
    lw.fc_in = {fetch.get(l + "ffn.up_proj.weight", {f, d}), bias(l + "ffn.up_proj.bias", f)};
    lw.fc_out = {fetch.get(l + "ffn.down_proj.weight", {d, f}), bias(l + "ffn.down_proj.bias", d)};
    w.layers.push_back(std::move(lw));
  }
}

}  // namespace destein

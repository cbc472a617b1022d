// Gemma 2 and the Gemma 3 text model: the LLaMA checkpoint layout with four (1 + w)
// RMSNorms per layer (before and after the attention and the MLP), embeddings scaled by
// sqrt(hidden_size), a tanh-GELU gated MLP, attention scaled by query_pre_attn_scalar, a
// tied head. Gemma 2 soft-caps attention scores and logits; Gemma 3 normalises each q and k
// head before RoPE. Sliding windows per layer and Gemma 3's local RoPE base come from the
// config (the shared decoder applies them).
#include <ATen/ATen.h>

#include <cmath>

#include "runtime/families/decoder.hpp"

namespace destein {

void build_gemma(WeightFetcher& fetch, Architecture& arch, DecoderWeights& w) {
  const ModelConfig& c = fetch.config();
  const std::string p = fetch.has("model.embed_tokens.weight") ? "model." : "";
  const int64_t d = c.d_model, f = c.d_ff, v = c.vocab_size, dh = c.head_dim;
  const int64_t q_dim = c.n_heads * dh, kv_dim = c.n_kv_heads * dh;
  arch.norm = NormKind::kRMSNormPlusOne;
  arch.positions = PositionKind::kRotary;
  arch.mlp = MlpKind::kGated;
  arch.activation = c.activation;
  arch.pre_norm = true;
  const FamilyOptions o = family_options(c, fetch.source());
  arch.qk_norm_per_head = o.qk_norm;
  arch.embedding_scale = std::sqrt(static_cast<double>(d));
  arch.softmax_scale = 1.0 / std::sqrt(o.query_pre_attn_scalar.value_or(static_cast<double>(dh)));
  arch.attn_softcap = o.attn_softcap;
  arch.final_softcap = o.final_softcap;
  arch.rope_scaling = o.rope_scaling;
  arch.rope_local_theta = o.rope_local_theta;
  arch.sliding_layers = o.sliding_layers;

  auto norm = [&](const std::string& name, int64_t n) { return Norm{fetch.get(name, {n}), {}}; };
  w.token_embedding = fetch.get(p + "embed_tokens.weight", {v, d});
  w.final_norm = norm(p + "norm.weight", d);
  w.lm_head = c.tie_word_embeddings && !fetch.has("lm_head.weight")
                  ? w.token_embedding
                  : fetch.get("lm_head.weight", {v, d});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string l = p + "layers." + std::to_string(i) + ".";
    LayerWeights lw;
    lw.attn_norm = norm(l + "input_layernorm.weight", d);
    lw.post_attn_norm = norm(l + "post_attention_layernorm.weight", d);
    lw.mlp_norm = norm(l + "pre_feedforward_layernorm.weight", d);
    lw.post_mlp_norm = norm(l + "post_feedforward_layernorm.weight", d);
    lw.qkv.weight = at::cat({fetch.get(l + "self_attn.q_proj.weight", {q_dim, d}),
                             fetch.get(l + "self_attn.k_proj.weight", {kv_dim, d}),
                             fetch.get(l + "self_attn.v_proj.weight", {kv_dim, d})});
    lw.out.weight = fetch.get(l + "self_attn.o_proj.weight", {d, q_dim});
    if (c.attention_bias) {
      lw.qkv.bias = at::cat({fetch.get(l + "self_attn.q_proj.bias", {q_dim}),
                             fetch.get(l + "self_attn.k_proj.bias", {kv_dim}),
                             fetch.get(l + "self_attn.v_proj.bias", {kv_dim})});
      lw.out.bias = fetch.get(l + "self_attn.o_proj.bias", {d});
    }
    if (o.qk_norm) {
      lw.q_norm = norm(l + "self_attn.q_norm.weight", dh);
      lw.k_norm = norm(l + "self_attn.k_norm.weight", dh);
    }
    lw.fc_in.weight = at::cat({fetch.get(l + "mlp.gate_proj.weight", {f, d}),
                               fetch.get(l + "mlp.up_proj.weight", {f, d})});
    lw.fc_out.weight = fetch.get(l + "mlp.down_proj.weight", {d, f});
    w.layers.push_back(std::move(lw));
  }
}

}  // namespace destein

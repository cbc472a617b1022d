// LLaMA family (LLaMA 2 and 3.x, Mistral, Qwen2/2.5, Qwen3): RMSNorm, rotary positions in
// Hugging Face's rotate-half convention (rope_scaling and per-layer sliding windows are the
// shared decoder's, from the config), SwiGLU MLP, grouped-query attention, untied head by
// default. They share the checkpoint layout; Qwen2 adds q/k/v biases (attention_bias set by
// the config parser), Qwen3 an RMSNorm of each q and k head before RoPE.
#include "runtime/families/decoder.hpp"

#include <ATen/ATen.h>

namespace destein {

void build_llama(WeightFetcher& fetch, Architecture& arch, DecoderWeights& w) {
  const ModelConfig& c = fetch.config();
  const std::string p = fetch.has("model.embed_tokens.weight") ? "model." : "";
  const int64_t d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  arch.norm = NormKind::kRMSNorm;
  arch.positions = PositionKind::kRotary;
  arch.mlp = MlpKind::kGated;
  arch.activation = c.activation;
  arch.pre_norm = true;
  const FamilyOptions o = family_options(c, fetch.source());
  arch.qk_norm_per_head = o.qk_norm;
  arch.rope_scaling = o.rope_scaling;
  arch.sliding_layers = o.sliding_layers;

  w.token_embedding = fetch.get(p + "embed_tokens.weight", {v, d});
  w.final_norm = {fetch.get(p + "norm.weight", {d}), {}};
  w.lm_head = c.tie_word_embeddings && !fetch.has("lm_head.weight")
                  ? w.token_embedding
                  : fetch.get("lm_head.weight", {v, d});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string l = p + "layers." + std::to_string(i) + ".";
    LayerWeights lw;
    lw.attn_norm = {fetch.get(l + "input_layernorm.weight", {d}), {}};
    lw.mlp_norm = {fetch.get(l + "post_attention_layernorm.weight", {d}), {}};
    lw.qkv.weight = at::cat({fetch.get(l + "self_attn.q_proj.weight", {q_dim, d}),
                             fetch.get(l + "self_attn.k_proj.weight", {kv_dim, d}),
                             fetch.get(l + "self_attn.v_proj.weight", {kv_dim, d})});
    lw.out.weight = fetch.get(l + "self_attn.o_proj.weight", {d, q_dim});
    if (c.attention_bias) {
      lw.qkv.bias = at::cat({fetch.get(l + "self_attn.q_proj.bias", {q_dim}),
                             fetch.get(l + "self_attn.k_proj.bias", {kv_dim}),
                             fetch.get(l + "self_attn.v_proj.bias", {kv_dim})});
      lw.out.bias = fetch.get_optional(l + "self_attn.o_proj.bias", {d});
    }
    lw.fc_in.weight = at::cat({fetch.get(l + "mlp.gate_proj.weight", {f, d}),
                               fetch.get(l + "mlp.up_proj.weight", {f, d})});
    lw.fc_out.weight = fetch.get(l + "mlp.down_proj.weight", {d, f});
    if (o.mlp_bias) {
      lw.fc_in.bias = at::cat(
          {fetch.get(l + "mlp.gate_proj.bias", {f}), fetch.get(l + "mlp.up_proj.bias", {f})});
      lw.fc_out.bias = fetch.get(l + "mlp.down_proj.bias", {d});
    }
    if (o.qk_norm) {
      lw.q_norm = {fetch.get(l + "self_attn.q_norm.weight", {c.head_dim}), {}};
      lw.k_norm = {fetch.get(l + "self_attn.k_norm.weight", {c.head_dim}), {}};
    }
    w.layers.push_back(std::move(lw));
  }
}

}  // namespace destein

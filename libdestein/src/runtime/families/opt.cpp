// OPT: learned positions looked up at position + 2, ReLU MLP, pre- or post-LayerNorm
// (do_layer_norm_before), optional project_in/out when the embedding width differs
// (OPT-350m), tied output head.
#include "runtime/families/decoder.hpp"

#include <ATen/ATen.h>

namespace destein {

void build_opt(WeightFetcher& fetch, Architecture& arch, DecoderWeights& w) {
  const ModelConfig& c = fetch.config();
  const std::string p =
      fetch.has("model.decoder.embed_tokens.weight") ? "model.decoder." : "decoder.";
  const int64_t d = c.d_model, f = c.d_ff, v = c.vocab_size, e = c.word_embed_proj_dim;
  arch.norm = NormKind::kLayerNorm;
  arch.positions = PositionKind::kLearned;
  arch.mlp = MlpKind::kPlain;
  arch.activation = c.activation;
  arch.pre_norm = c.pre_norm;

  w.token_embedding = fetch.get(p + "embed_tokens.weight", {v, e});
  w.position_embedding = fetch.get(p + "embed_positions.weight", {c.max_positions + 2, d});
  w.position_offset = 2;
  if (e != d) {
    w.project_in = {fetch.get(p + "project_in.weight", {d, e}), {}};
    w.project_out = {fetch.get(p + "project_out.weight", {e, d}), {}};
  }
  if (c.final_norm) {
    w.final_norm = {fetch.get(p + "final_layer_norm.weight", {d}),
                    fetch.get(p + "final_layer_norm.bias", {d})};
  }
  w.lm_head = c.tie_word_embeddings && !fetch.has("lm_head.weight")
                  ? w.token_embedding
                  : fetch.get("lm_head.weight", {v, e});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string l = p + "layers." + std::to_string(i) + ".";
    LayerWeights lw;
    lw.attn_norm = {fetch.get(l + "self_attn_layer_norm.weight", {d}),
                    fetch.get(l + "self_attn_layer_norm.bias", {d})};
    lw.mlp_norm = {fetch.get(l + "final_layer_norm.weight", {d}),
                   fetch.get(l + "final_layer_norm.bias", {d})};
    lw.qkv = {at::cat({fetch.get(l + "self_attn.q_proj.weight", {d, d}),
                       fetch.get(l + "self_attn.k_proj.weight", {d, d}),
                       fetch.get(l + "self_attn.v_proj.weight", {d, d})}),
              at::cat({fetch.get(l + "self_attn.q_proj.bias", {d}),
                       fetch.get(l + "self_attn.k_proj.bias", {d}),
                       fetch.get(l + "self_attn.v_proj.bias", {d})})};
    lw.out = {fetch.get(l + "self_attn.out_proj.weight", {d, d}),
              fetch.get(l + "self_attn.out_proj.bias", {d})};
    lw.fc_in = {fetch.get(l + "fc1.weight", {f, d}), fetch.get(l + "fc1.bias", {f})};
    lw.fc_out = {fetch.get(l + "fc2.weight", {d, f}), fetch.get(l + "fc2.bias", {d})};
    w.layers.push_back(std::move(lw));
  }
}

}  // namespace destein

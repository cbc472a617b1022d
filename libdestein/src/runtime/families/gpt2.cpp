// GPT-2: learned positions, pre-LayerNorm, gelu_new MLP, tied output head. Its Conv1D
// layers store weights as (in, out); we transpose them once at load.
#include "runtime/families/decoder.hpp"

#include <ATen/ATen.h>

namespace destein {

void build_gpt2(WeightFetcher& fetch, Architecture& arch, DecoderWeights& w) {
  const ModelConfig& c = fetch.config();
  const std::string p = fetch.has("transformer.wte.weight") ? "transformer." : "";
  const int64_t d = c.d_model, f = c.d_ff, v = c.vocab_size;
  arch.norm = NormKind::kLayerNorm;
  arch.positions = PositionKind::kLearned;
  arch.mlp = MlpKind::kPlain;
  arch.activation = c.activation;
  arch.pre_norm = true;

  w.token_embedding = fetch.get(p + "wte.weight", {v, d});
  w.position_embedding = fetch.get(p + "wpe.weight", {c.max_positions, d});
  w.final_norm = {fetch.get(p + "ln_f.weight", {d}), fetch.get(p + "ln_f.bias", {d})};
  w.lm_head = c.tie_word_embeddings ? w.token_embedding : fetch.get("lm_head.weight", {v, d});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string l = p + "h." + std::to_string(i) + ".";
    LayerWeights lw;
    lw.attn_norm = {fetch.get(l + "ln_1.weight", {d}), fetch.get(l + "ln_1.bias", {d})};
    lw.mlp_norm = {fetch.get(l + "ln_2.weight", {d}), fetch.get(l + "ln_2.bias", {d})};
    lw.qkv = {fetch.get(l + "attn.c_attn.weight", {d, 3 * d}).t().contiguous(),
              fetch.get(l + "attn.c_attn.bias", {3 * d})};
    lw.out = {fetch.get(l + "attn.c_proj.weight", {d, d}).t().contiguous(),
              fetch.get(l + "attn.c_proj.bias", {d})};
    lw.fc_in = {fetch.get(l + "mlp.c_fc.weight", {d, f}).t().contiguous(),
                fetch.get(l + "mlp.c_fc.bias", {f})};
    lw.fc_out = {fetch.get(l + "mlp.c_proj.weight", {f, d}).t().contiguous(),
                 fetch.get(l + "mlp.c_proj.bias", {d})};
    w.layers.push_back(std::move(lw));
  }
}

}  // namespace destein

#pragma once
/// The architecture of a decoder-only transformer, read from a Hugging Face config.json.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace destein {

/// Everything the native forward pass needs to know about a checkpoint's architecture.
/// Built from the model's Hugging Face `config.json`; unknown keys are ignored, missing
/// required ones are errors naming the key.
struct ModelConfig {
  std::string model_type;  ///< "gpt2", "llama", "mistral", "opt", "mpt"
  int64_t vocab_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  ///< grouped-query attention; == n_heads without GQA
  int64_t d_model = 0;
  int64_t head_dim = 0;       ///< d_model / n_heads unless the config says otherwise
  int64_t d_ff = 0;           ///< MLP inner width
  int64_t max_positions = 0;  ///< longest sequence the position scheme supports
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;            ///< LLaMA family only
  std::optional<int64_t> sliding_window;  ///< Mistral
  std::string activation;                 ///< "gelu_new", "gelu", "relu", "silu"
  bool tie_word_embeddings = false;
  bool attention_bias = false;      ///< q/k/v/o biases (LLaMA family)
  bool pre_norm = true;             ///< OPT's do_layer_norm_before
  bool final_norm = true;           ///< OPT-350m has none
  int64_t word_embed_proj_dim = 0;  ///< OPT project_in/out; == d_model when absent
  // MPT (MosaicML) attention and output options; the defaults are the other families'.
  bool alibi = false;              ///< ALiBi attention bias (MPT attn_config.alibi)
  double alibi_bias_max = 8.0;     ///< slopes 2^(-alibi_bias_max * i / H'), H' = next power of 2
  bool learned_positions = true;   ///< MPT learned_pos_emb (ignored, as by MPT, when alibi)
  std::optional<double> clip_qkv;  ///< clamp the fused q, k, v to [-clip_qkv, clip_qkv]
  bool qk_ln = false;              ///< LayerNorm of q and k over all heads before attention
  std::optional<double> softmax_scale;  ///< attention scale; default 1 / sqrt(head_dim)
  double logit_scale = 1.0;             ///< logits are multiplied by this (MPT logit_scale)
  bool bias = true;                     ///< false: no bias in any linear or norm (MPT no_bias)
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
  std::optional<int64_t> pad_token_id;
  nlohmann::json raw;  ///< the config.json as read

  /// Parses a Hugging Face config.json object. `source` names the file in errors.
  /// Throws std::runtime_error for a missing or ill-typed key, std::invalid_argument
  /// for an unknown model_type.
  static ModelConfig from_hf_json(const nlohmann::json& config, const std::string& source);
};

}  // namespace destein

// Private: the architecture options of the newer rotary families (Llama 3.x, Mistral,
// Qwen2/2.5, Qwen3, Gemma 2, Gemma 3 text) beyond the fields of ModelConfig, read from the
// config.json a ModelConfig keeps (`raw`). ModelConfig::from_hf_json calls this too, so an
// option destein does not implement is refused, by name, when the config is read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "destein/runtime/model_config.hpp"

namespace destein {

/// RoPE frequency scaling, Hugging Face's `rope_scaling` (its `rope_type`, or the older
/// `type`); only the types destein computes exactly are accepted.
struct RopeScaling {
  std::string type = "default";        // "default" (none), "linear" or "llama3"
  double factor = 1.0;                 // linear, llama3: frequencies divided by this
  double low_freq_factor = 1.0;        // llama3
  double high_freq_factor = 4.0;       // llama3
  int64_t original_max_positions = 0;  // llama3: the context the model was trained on
};

struct FamilyOptions {
  RopeScaling rope_scaling;       // for Gemma 3 its global layers only
  double rope_local_theta = 0.0;  // Gemma 3: RoPE base of the sliding layers (0: rope_theta)
  // Per layer, whether ModelConfig::sliding_window applies (Gemma alternates); empty: all.
  std::vector<bool> sliding_layers;
  bool qk_norm = false;   // Qwen3, Gemma 3: RMSNorm of each q and k head before RoPE
  bool mlp_bias = false;  // biases on the gated MLP's projections (LLaMA mlp_bias)
  std::optional<double> query_pre_attn_scalar;  // Gemma: attention scale 1 / sqrt(this)
  std::optional<double> attn_softcap;   // Gemma: scores = c tanh(scores / c) before the mask
  std::optional<double> final_softcap;  // Gemma 2: logits = c tanh(logits / c)
};

/// The options of `c.model_type` read from `c.raw`; defaults for the other families.
/// Throws std::runtime_error naming `source` and the key for what is not implemented.
FamilyOptions family_options(const ModelConfig& c, const std::string& source);

}  // namespace destein

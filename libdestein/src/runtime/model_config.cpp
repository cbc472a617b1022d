#include "destein/runtime/model_config.hpp"

#include <cmath>

#include "check.hpp"

namespace destein {
namespace {

using nlohmann::json;

// Reads `key` from the config, with the file named in the error when it is missing or
// of the wrong type.
template <typename T>
T required(const json& config, const std::string& key, const std::string& source) {
  auto it = config.find(key);
  DESTEIN_CHECK_IO(it != config.end() && !it->is_null(), "{}: config.json has no '{}'", source,
                   key);
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw std::runtime_error(
        fmt::format("{}: config.json key '{}' has the wrong type (found {})", source, key, it->dump()));
  }
}

template <typename T>
T optional_or(const json& config, const std::string& key, T fallback, const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw std::runtime_error(
        fmt::format("{}: config.json key '{}' has the wrong type (found {})", source, key, it->dump()));
  }
}

std::optional<int64_t> optional_id(const json& config, const std::string& key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  // Some configs list several EOS ids; the first is the one generation stops at.
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  return std::nullopt;
}

void parse_gpt2(ModelConfig& c, const json& j, const std::string& src) {
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.n_layers = required<int64_t>(j, "n_layer", src);
  c.n_heads = required<int64_t>(j, "n_head", src);
  c.n_kv_heads = c.n_heads;
  c.d_model = required<int64_t>(j, "n_embd", src);
  c.d_ff = optional_or<int64_t>(j, "n_inner", 4 * c.d_model, src);
  c.max_positions = required<int64_t>(j, "n_positions", src);
  c.norm_eps = optional_or<double>(j, "layer_norm_epsilon", 1e-5, src);
  c.activation = optional_or<std::string>(j, "activation_function", "gelu_new", src);
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", true, src);
  DESTEIN_CHECK_IO(!optional_or<bool>(j, "scale_attn_by_inverse_layer_idx", false, src),
                   "{}: scale_attn_by_inverse_layer_idx=true is not supported", src);
  DESTEIN_CHECK_IO(optional_or<bool>(j, "scale_attn_weights", true, src),
                   "{}: scale_attn_weights=false is not supported", src);
}

void parse_llama(ModelConfig& c, const json& j, const std::string& src) {
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.n_layers = required<int64_t>(j, "num_hidden_layers", src);
  c.n_heads = required<int64_t>(j, "num_attention_heads", src);
  c.n_kv_heads = optional_or<int64_t>(j, "num_key_value_heads", c.n_heads, src);
  c.d_model = required<int64_t>(j, "hidden_size", src);
  c.head_dim = optional_or<int64_t>(j, "head_dim", 0, src);
  c.d_ff = required<int64_t>(j, "intermediate_size", src);
  c.max_positions = optional_or<int64_t>(j, "max_position_embeddings", 2048, src);
  c.norm_eps = optional_or<double>(j, "rms_norm_eps", 1e-6, src);
  c.rope_theta = optional_or<double>(j, "rope_theta", 10000.0, src);
  c.activation = optional_or<std::string>(j, "hidden_act", "silu", src);
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", false, src);
  c.attention_bias = optional_or<bool>(j, "attention_bias", false, src);
  if (auto it = j.find("sliding_window"); it != j.end() && it->is_number_integer()) {
    c.sliding_window = it->get<int64_t>();
  }
  auto scaling = j.find("rope_scaling");
  DESTEIN_CHECK_IO(scaling == j.end() || scaling->is_null(),
                   "{}: rope_scaling {} is not supported (only plain RoPE with rope_theta)", src,
                   scaling == j.end() ? "" : scaling->dump());
  DESTEIN_CHECK_IO(c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0,
                   "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                   src, c.n_heads, c.n_kv_heads);
}

void parse_opt(ModelConfig& c, const json& j, const std::string& src) {
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.n_layers = required<int64_t>(j, "num_hidden_layers", src);
  c.n_heads = required<int64_t>(j, "num_attention_heads", src);
  c.n_kv_heads = c.n_heads;
  c.d_model = required<int64_t>(j, "hidden_size", src);
  c.d_ff = required<int64_t>(j, "ffn_dim", src);
  c.max_positions = required<int64_t>(j, "max_position_embeddings", src);
  c.norm_eps = 1e-5;  // fixed in OPT's modeling code
  c.activation = optional_or<std::string>(j, "activation_function", "relu", src);
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", true, src);
  c.pre_norm = optional_or<bool>(j, "do_layer_norm_before", true, src);
  c.final_norm = c.pre_norm && !optional_or<bool>(j, "_remove_final_layer_norm", false, src);
  c.word_embed_proj_dim = optional_or<int64_t>(j, "word_embed_proj_dim", c.d_model, src);
  DESTEIN_CHECK_IO(optional_or<bool>(j, "enable_bias", true, src),
                   "{}: enable_bias=false is not supported", src);
  DESTEIN_CHECK_IO(optional_or<bool>(j, "layer_norm_elementwise_affine", true, src),
                   "{}: layer_norm_elementwise_affine=false is not supported", src);
}

// MPT (MosaicML; Hugging Face's MptConfig has the same keys). Hugging Face and MosaicML
// disagree on the defaults of no_bias and attn_config.alibi, so both must be present.
// Every option whose effect at inference we do not implement is refused by name.
void parse_mpt(ModelConfig& c, const json& j, const std::string& src) {
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.n_layers = required<int64_t>(j, "n_layers", src);
  c.n_heads = required<int64_t>(j, "n_heads", src);
  c.n_kv_heads = c.n_heads;
  c.d_model = required<int64_t>(j, "d_model", src);
  c.max_positions = optional_or<int64_t>(j, "max_seq_len", 2048, src);
  c.norm_eps = optional_or<double>(j, "layer_norm_epsilon", 1e-5, src);
  c.activation = "gelu";  // MPTMLP: nn.GELU(approximate='none')
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", true, src);
  c.bias = !required<bool>(j, "no_bias", src);
  c.learned_positions = optional_or<bool>(j, "learned_pos_emb", true, src);
  const double ratio = optional_or<double>(j, "expansion_ratio", 4.0, src);
  const double ffn = ratio * static_cast<double>(c.d_model);
  DESTEIN_CHECK_IO(ffn >= 1 && ffn == std::floor(ffn),
                   "{}: expansion_ratio {} times d_model {} is not a positive whole number", src,
                   ratio, c.d_model);
  c.d_ff = static_cast<int64_t>(ffn);

  const std::string norm = optional_or<std::string>(j, "norm_type", "low_precision_layernorm", src);
  DESTEIN_CHECK_IO(norm == "low_precision_layernorm" || norm == "layernorm",
                   "{}: norm_type '{}' is not supported (expected low_precision_layernorm or "
                   "layernorm)",
                   src, norm);
  // fc_type is a string, or in newer llm-foundry configs {"name": ...}.
  std::string fc = "torch";
  if (auto it = j.find("fc_type"); it != j.end() && !it->is_null()) {
    fc = it->is_object() ? it->value("name", std::string("?")) : it->is_string() ? it->get<std::string>() : it->dump();
  }
  DESTEIN_CHECK_IO(fc == "torch", "{}: fc_type '{}' is not supported (expected torch)", src, fc);
  DESTEIN_CHECK_IO(!j.contains("block_overrides") || j["block_overrides"].is_null() ||
                       j["block_overrides"].empty(),
                   "{}: block_overrides is not supported (every block must be the same)", src);

  if (auto it = j.find("logit_scale"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      DESTEIN_CHECK_IO(it->get<std::string>() == "inv_sqrt_d_model",
                       "{}: logit_scale '{}' is not supported (expected a number or "
                       "\"inv_sqrt_d_model\")",
                       src, it->get<std::string>());
      c.logit_scale = 1.0 / std::sqrt(static_cast<double>(c.d_model));
    } else {
      DESTEIN_CHECK_IO(it->is_number(), "{}: config.json key 'logit_scale' has the wrong type (found {})",
                       src, it->dump());
      c.logit_scale = it->get<double>();
    }
  }

  if (auto it = j.find("ffn_config"); it != j.end() && !it->is_null()) {
    const std::string where = src + " (ffn_config)";
    const std::string type = optional_or<std::string>(*it, "ffn_type", "mptmlp", where);
    DESTEIN_CHECK_IO(type == "mptmlp",
                     "{}: ffn_config.ffn_type '{}' is not supported (expected mptmlp)", src, type);
    if (auto act = it->find("ffn_act_fn"); act != it->end() && !act->is_null()) {
      const bool exact_gelu = act->is_object() && act->value("name", "") == "gelu" &&
                              act->value("approximate", "none") == "none";
      DESTEIN_CHECK_IO(exact_gelu,
                       "{}: ffn_config.ffn_act_fn {} is not supported (expected exact gelu)", src,
                       act->dump());
    }
    if (auto h = it->find("ffn_hidden_size"); h != it->end() && !h->is_null()) {
      c.d_ff = optional_or<int64_t>(*it, "ffn_hidden_size", c.d_ff, where);
    }
  }

  auto attn_it = j.find("attn_config");
  DESTEIN_CHECK_IO(attn_it != j.end() && attn_it->is_object(),
                   "{}: config.json has no 'attn_config' object (MPT's attention options)", src);
  const json& a = *attn_it;
  const std::string where = src + " (attn_config)";
  auto refuse_true = [&](const char* key, const char* why) {
    DESTEIN_CHECK_IO(!optional_or<bool>(a, key, false, where),
                     "{}: attn_config.{} = true is not supported ({})", src, key, why);
  };
  c.alibi = required<bool>(a, "alibi", where);
  c.alibi_bias_max = optional_or<double>(a, "alibi_bias_max", 8.0, where);
  c.qk_ln = optional_or<bool>(a, "qk_ln", false, where);
  if (auto it = a.find("clip_qkv"); it != a.end() && !it->is_null()) {
    const double clip = optional_or<double>(a, "clip_qkv", 0.0, where);
    DESTEIN_CHECK_IO(clip >= 0, "{}: attn_config.clip_qkv must be positive, found {}", src, clip);
    if (clip > 0) c.clip_qkv = clip;  // MPT tests `if self.clip_qkv:`, so 0 means off
  }
  if (auto it = a.find("softmax_scale"); it != a.end() && !it->is_null()) {
    c.softmax_scale = optional_or<double>(a, "softmax_scale", 0.0, where);
  }
  const std::string type = optional_or<std::string>(a, "attn_type", "multihead_attention", where);
  DESTEIN_CHECK_IO(type == "multihead_attention",
                   "{}: attn_config.attn_type '{}' is not supported (expected multihead_attention)",
                   src, type);
  refuse_true("prefix_lm", "bidirectional prefix attention");
  refuse_true("attn_uses_sequence_id", "attention restricted by sequence id");
  refuse_true("rope", "rotary embeddings in MPT");
  refuse_true("qk_gn", "per-head q/k normalisation");
  if (auto it = a.find("sliding_window_size"); it != a.end() && !it->is_null()) {
    const int64_t window = optional_or<int64_t>(a, "sliding_window_size", -1, where);
    DESTEIN_CHECK_IO(window == -1, "{}: attn_config.sliding_window_size {} is not supported (expected -1)",
                     src, window);
  }
  if (auto it = a.find("kv_n_heads"); it != a.end() && !it->is_null()) {
    const int64_t kv = optional_or<int64_t>(a, "kv_n_heads", c.n_heads, where);
    DESTEIN_CHECK_IO(kv == c.n_heads, "{}: attn_config.kv_n_heads {} differs from n_heads {}: "
                     "grouped-query MPT is not supported", src, kv, c.n_heads);
  }
}

}  // namespace

ModelConfig ModelConfig::from_hf_json(const json& config, const std::string& source) {
  DESTEIN_CHECK_IO(config.is_object(), "{}: config.json must hold a JSON object", source);
  ModelConfig c;
  c.raw = config;
  c.model_type = required<std::string>(config, "model_type", source);
  if (c.model_type == "gpt2") {
    parse_gpt2(c, config, source);
  } else if (c.model_type == "llama" || c.model_type == "mistral") {
    parse_llama(c, config, source);
  } else if (c.model_type == "opt") {
    parse_opt(c, config, source);
  } else if (c.model_type == "mpt") {
    parse_mpt(c, config, source);
  } else {
    throw std::invalid_argument(fmt::format(
        "{}: unknown model_type '{}': destein runs gpt2, llama, mistral, opt and mpt", source,
        c.model_type));
  }
  DESTEIN_CHECK_IO(c.vocab_size > 0 && c.n_layers > 0 && c.n_heads > 0 && c.d_model > 0,
                   "{}: vocab_size, layer count, head count and hidden size must be positive",
                   source);
  if (c.head_dim == 0) {
    DESTEIN_CHECK_IO(c.d_model % c.n_heads == 0,
                     "{}: hidden size {} is not divisible by the head count {}", source,
                     c.d_model, c.n_heads);
    c.head_dim = c.d_model / c.n_heads;
  }
  if (c.word_embed_proj_dim == 0) c.word_embed_proj_dim = c.d_model;
  c.bos_token_id = optional_id(config, "bos_token_id");
  c.eos_token_id = optional_id(config, "eos_token_id");
  c.pad_token_id = optional_id(config, "pad_token_id");
  return c;
}

}  // namespace destein

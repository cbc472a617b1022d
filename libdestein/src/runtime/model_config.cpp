#include "destein/runtime/model_config.hpp"

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
  } else {
    throw std::invalid_argument(fmt::format(
        "{}: unknown model_type '{}': destein runs gpt2, llama, mistral and opt", source,
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

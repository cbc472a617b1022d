#include "destein/runtime/model_config.hpp"

#include <algorithm>
#include <cmath>

#include "check.hpp"
#include "runtime/family_options.hpp"

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
    throw std::runtime_error(fmt::format("{}: config.json key '{}' has the wrong type (found {})",
                                         source, key, it->dump()));
  }
}

template <typename T>
T optional_or(const json& config, const std::string& key, T fallback, const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw std::runtime_error(fmt::format("{}: config.json key '{}' has the wrong type (found {})",
                                         source, key, it->dump()));
  }
}

std::optional<int64_t> optional_id(const json& config, const std::string& key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  // Some configs list several EOS ids; the first is the one generation stops at.
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer())
    return (*it)[0].get<int64_t>();
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

// rope_scaling (or the flat rope_parameters of newer configs): the frequency schedules
// destein computes exactly. Dynamic NTK rescales the frequencies with the current sequence
// length, so keys already in a KV cache would carry stale rotations: refused, as are the
// schedules not implemented.
RopeScaling parse_rope_scaling(const json& s, const std::string& src, const std::string& key) {
  RopeScaling r;
  if (s.is_null()) return r;
  DESTEIN_CHECK_IO(s.is_object(), "{}: {} must be an object or null, found {}", src, key, s.dump());
  std::string type;
  if (auto t = s.find("rope_type"); t != s.end() && t->is_string()) {
    type = t->get<std::string>();
  } else if (auto t2 = s.find("type"); t2 != s.end() && t2->is_string()) {
    type = t2->get<std::string>();
  }
  DESTEIN_CHECK_IO(!type.empty(), "{}: {} has no rope_type (or type): {}", src, key, s.dump());
  const std::string where = src + " (" + key + ")";
  if (type == "default") return r;
  if (type == "linear") {
    r.factor = required<double>(s, "factor", where);
  } else if (type == "llama3") {
    r.factor = required<double>(s, "factor", where);
    r.low_freq_factor = required<double>(s, "low_freq_factor", where);
    r.high_freq_factor = required<double>(s, "high_freq_factor", where);
    r.original_max_positions = required<int64_t>(s, "original_max_position_embeddings", where);
    DESTEIN_CHECK_IO(r.high_freq_factor > r.low_freq_factor && r.low_freq_factor > 0,
                     "{}: {} llama3 needs high_freq_factor ({}) > low_freq_factor ({}) > 0", src,
                     key, r.high_freq_factor, r.low_freq_factor);
    DESTEIN_CHECK_IO(r.original_max_positions > 0,
                     "{}: {} original_max_position_embeddings must be positive, found {}", src, key,
                     r.original_max_positions);
  } else {
    throw std::runtime_error(fmt::format(
        "{}: {} type '{}' is not supported: destein computes default, linear and llama3 "
        "(dynamic changes the frequencies with the sequence length, which cached keys cannot "
        "follow; yarn, longrope and the others are not implemented)",
        src, key, type));
  }
  DESTEIN_CHECK_IO(r.factor > 0, "{}: {} factor must be positive, found {}", src, key, r.factor);
  r.type = type;
  return r;
}

// rope_theta and rope_scaling, or newer configs' rope_parameters holding both.
void parse_rope(ModelConfig& c, FamilyOptions& o, const json& j, const std::string& src,
                double default_theta) {
  c.rope_theta = optional_or<double>(j, "rope_theta", default_theta, src);
  if (auto it = j.find("rope_scaling"); it != j.end())
    o.rope_scaling = parse_rope_scaling(*it, src, "rope_scaling");
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    DESTEIN_CHECK_IO(it->is_object() && (it->contains("rope_type") || it->contains("type")),
                     "{}: rope_parameters {} is not supported (expected one object with rope_type)",
                     src, it->dump());
    o.rope_scaling = parse_rope_scaling(*it, src, "rope_parameters");
    c.rope_theta = optional_or<double>(*it, "rope_theta", c.rope_theta, src + " (rope_parameters)");
  }
  const double partial = optional_or<double>(j, "partial_rotary_factor", 1.0, src);
  DESTEIN_CHECK_IO(partial == 1.0, "{}: partial_rotary_factor {} is not supported (expected 1)",
                   src, partial);
}

// layer_types (newer configs): which layers use the sliding window.
void parse_layer_types(ModelConfig& c, FamilyOptions& o, const json& j, const std::string& src) {
  auto it = j.find("layer_types");
  if (it == j.end() || it->is_null()) return;
  DESTEIN_CHECK_IO(it->is_array() && static_cast<int64_t>(it->size()) == c.n_layers,
                   "{}: layer_types must list one type for each of the {} layers, found {}", src,
                   c.n_layers, it->dump());
  std::vector<bool> sliding;
  for (const auto& t : *it) {
    const std::string type = t.is_string() ? t.get<std::string>() : t.dump();
    DESTEIN_CHECK_IO(type == "full_attention" || type == "sliding_attention",
                     "{}: layer_types entry '{}' is not supported (expected full_attention or "
                     "sliding_attention)",
                     src, type);
    sliding.push_back(type == "sliding_attention");
  }
  const bool any = std::find(sliding.begin(), sliding.end(), true) != sliding.end();
  DESTEIN_CHECK_IO(!any || c.sliding_window,
                   "{}: layer_types names sliding_attention layers but "
                   "sliding_window is not set",
                   src);
  o.sliding_layers = any ? sliding : std::vector<bool>();
  if (!any) c.sliding_window.reset();
}

std::optional<int64_t> optional_window(const json& j, const std::string& src) {
  auto it = j.find("sliding_window");
  if (it == j.end() || it->is_null()) return std::nullopt;
  const int64_t w = optional_or<int64_t>(j, "sliding_window", 0, src);
  DESTEIN_CHECK_IO(w > 0, "{}: sliding_window must be a positive integer or null, found {}", src,
                   it->dump());
  return w;
}

std::optional<double> optional_positive(const json& j, const std::string& key,
                                        std::optional<double> fallback, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_null()) return std::nullopt;
  const double v = optional_or<double>(j, key, 0.0, src);
  DESTEIN_CHECK_IO(v > 0, "{}: {} must be a positive number or null, found {}", src, key,
                   it->dump());
  return v;
}

// The LLaMA layout, shared by LLaMA 2/3, Mistral, Qwen2/2.5 and Qwen3: RMSNorm, RoPE,
// SwiGLU, grouped-query attention; the differences are options below.
void parse_llama(ModelConfig& c, const json& j, const std::string& src, FamilyOptions& o) {
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.n_layers = required<int64_t>(j, "num_hidden_layers", src);
  c.n_heads = required<int64_t>(j, "num_attention_heads", src);
  c.n_kv_heads = optional_or<int64_t>(j, "num_key_value_heads", c.n_heads, src);
  c.d_model = required<int64_t>(j, "hidden_size", src);
  c.head_dim = optional_or<int64_t>(j, "head_dim", 0, src);
  c.d_ff = required<int64_t>(j, "intermediate_size", src);
  c.max_positions = qwen ? required<int64_t>(j, "max_position_embeddings", src)
                         : optional_or<int64_t>(j, "max_position_embeddings", 2048, src);
  c.norm_eps = optional_or<double>(j, "rms_norm_eps", 1e-6, src);
  c.activation = optional_or<std::string>(j, "hidden_act", "silu", src);
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", false, src);
  parse_rope(c, o, j, src, qwen ? 1000000.0 : 10000.0);
  if (c.model_type == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases (and none on o_proj)
  } else {
    c.attention_bias = optional_or<bool>(j, "attention_bias", false, src);
  }
  o.qk_norm = c.model_type == "qwen3";
  o.mlp_bias = optional_or<bool>(j, "mlp_bias", false, src);
  if (qwen) {
    // Qwen configs carry a sliding_window that applies only with use_sliding_window, which no
    // released Qwen2/2.5/3 checkpoint sets; the per-layer rule it implies is not implemented.
    DESTEIN_CHECK_IO(!optional_or<bool>(j, "use_sliding_window", false, src),
                     "{}: use_sliding_window = true is not supported for {} (sliding attention "
                     "from max_window_layers on)",
                     src, c.model_type);
  } else {
    c.sliding_window = optional_window(j, src);
    parse_layer_types(c, o, j, src);
  }
  DESTEIN_CHECK_IO(c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0,
                   "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                   src, c.n_heads, c.n_kv_heads);
}

// Gemma 2 and the Gemma 3 text model: the LLaMA layout with (1 + w) RMSNorms around both
// sublayers, embeddings scaled by sqrt(hidden_size), GeGLU (tanh GELU), attention scaled by
// query_pre_attn_scalar, sliding windows on alternate layers; Gemma 2 soft-caps attention
// scores and logits, Gemma 3 normalises q and k per head and gives its sliding layers their
// own RoPE base. Defaults are transformers' Gemma2Config / Gemma3TextConfig.
void parse_gemma(ModelConfig& c, const json& j, const std::string& src, FamilyOptions& o) {
  const bool g3 = c.model_type == "gemma3_text";
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.n_layers = required<int64_t>(j, "num_hidden_layers", src);
  c.n_heads = required<int64_t>(j, "num_attention_heads", src);
  c.n_kv_heads = optional_or<int64_t>(j, "num_key_value_heads", c.n_heads, src);
  c.d_model = required<int64_t>(j, "hidden_size", src);
  c.head_dim = optional_or<int64_t>(j, "head_dim", 256, src);
  c.d_ff = required<int64_t>(j, "intermediate_size", src);
  c.max_positions = optional_or<int64_t>(j, "max_position_embeddings", g3 ? 131072 : 8192, src);
  c.norm_eps = optional_or<double>(j, "rms_norm_eps", 1e-6, src);
  // Gemma's MLP reads hidden_activation; hidden_act is the older key.
  c.activation = optional_or<std::string>(
      j, "hidden_activation", optional_or<std::string>(j, "hidden_act", "gelu_pytorch_tanh", src),
      src);
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", true, src);
  c.attention_bias = optional_or<bool>(j, "attention_bias", false, src);
  parse_rope(c, o, j, src, g3 ? 1000000.0 : 10000.0);
  if (g3) o.rope_local_theta = optional_or<double>(j, "rope_local_base_freq", 10000.0, src);
  o.query_pre_attn_scalar = optional_or<double>(j, "query_pre_attn_scalar", 256.0, src);
  DESTEIN_CHECK_IO(*o.query_pre_attn_scalar > 0, "{}: query_pre_attn_scalar must be positive", src);
  o.attn_softcap = optional_positive(j, "attn_logit_softcapping",
                                     g3 ? std::nullopt : std::optional<double>(50.0), src);
  o.final_softcap = optional_positive(j, "final_logit_softcapping",
                                      g3 ? std::nullopt : std::optional<double>(30.0), src);
  o.qk_norm = g3;
  c.sliding_window = optional_window(j, src);
  if (!j.contains("sliding_window")) c.sliding_window = 4096;
  DESTEIN_CHECK_IO(!optional_or<bool>(j, "use_bidirectional_attention", false, src),
                   "{}: use_bidirectional_attention = true is not supported (destein runs causal "
                   "language models)",
                   src);
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    parse_layer_types(c, o, j, src);
  } else if (c.sliding_window) {
    // Gemma 2: layers 0, 2, 4, ... slide; Gemma 3: all but every sliding_window_pattern-th.
    const int64_t pattern = g3 ? optional_or<int64_t>(j, "sliding_window_pattern", 6, src) : 2;
    DESTEIN_CHECK_IO(pattern > 0, "{}: sliding_window_pattern must be positive, found {}", src,
                     pattern);
    for (int64_t i = 0; i < c.n_layers; ++i) o.sliding_layers.push_back((i + 1) % pattern != 0);
  }
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
    fc = it->is_object()   ? it->value("name", std::string("?"))
         : it->is_string() ? it->get<std::string>()
                           : it->dump();
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
      DESTEIN_CHECK_IO(it->is_number(),
                       "{}: config.json key 'logit_scale' has the wrong type (found {})", src,
                       it->dump());
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
    DESTEIN_CHECK_IO(window == -1,
                     "{}: attn_config.sliding_window_size {} is not supported (expected -1)", src,
                     window);
  }
  if (auto it = a.find("kv_n_heads"); it != a.end() && !it->is_null()) {
    const int64_t kv = optional_or<int64_t>(a, "kv_n_heads", c.n_heads, where);
    DESTEIN_CHECK_IO(kv == c.n_heads,
                     "{}: attn_config.kv_n_heads {} differs from n_heads {}: "
                     "grouped-query MPT is not supported",
                     src, kv, c.n_heads);
  }
}

bool is_llama_layout(const std::string& t) {
  return t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3";
}
bool is_gemma(const std::string& t) { return t == "gemma2" || t == "gemma3_text"; }

}  // namespace

FamilyOptions family_options(const ModelConfig& c, const std::string& source) {
  FamilyOptions o;
  if (!c.raw.is_object()) return o;  // a config made in code, not read from config.json
  ModelConfig scratch;
  scratch.model_type = c.model_type;
  if (is_llama_layout(c.model_type)) parse_llama(scratch, c.raw, source, o);
  if (is_gemma(c.model_type)) parse_gemma(scratch, c.raw, source, o);
  return o;
}

ModelConfig ModelConfig::from_hf_json(const json& config, const std::string& source) {
  DESTEIN_CHECK_IO(config.is_object(), "{}: config.json must hold a JSON object", source);
  ModelConfig c;
  c.raw = config;
  c.model_type = required<std::string>(config, "model_type", source);
  if (c.model_type == "gpt2") {
    parse_gpt2(c, config, source);
  } else if (is_llama_layout(c.model_type)) {
    FamilyOptions unused;
    parse_llama(c, config, source, unused);
  } else if (is_gemma(c.model_type)) {
    FamilyOptions unused;
    parse_gemma(c, config, source, unused);
  } else if (c.model_type == "opt") {
    parse_opt(c, config, source);
  } else if (c.model_type == "mpt") {
    parse_mpt(c, config, source);
  } else if (c.model_type == "gemma3") {
    throw std::invalid_argument(fmt::format(
        "{}: model_type 'gemma3' (Gemma 3 with its vision tower) is not supported: destein runs "
        "the text model, model_type gemma3_text (Gemma 3 1B, or the text_config and "
        "language_model weights of a larger one)",
        source));
  } else {
    throw std::invalid_argument(fmt::format(
        "{}: unknown model_type '{}': destein runs gpt2, llama, mistral, qwen2, qwen3, gemma2, "
        "gemma3_text, opt and mpt",
        source, c.model_type));
  }
  DESTEIN_CHECK_IO(c.vocab_size > 0 && c.n_layers > 0 && c.n_heads > 0 && c.d_model > 0,
                   "{}: vocab_size, layer count, head count and hidden size must be positive",
                   source);
  if (c.head_dim == 0) {
    DESTEIN_CHECK_IO(c.d_model % c.n_heads == 0,
                     "{}: hidden size {} is not divisible by the head count {}", source, c.d_model,
                     c.n_heads);
    c.head_dim = c.d_model / c.n_heads;
  }
  if (c.word_embed_proj_dim == 0) c.word_embed_proj_dim = c.d_model;
  c.bos_token_id = optional_id(config, "bos_token_id");
  c.eos_token_id = optional_id(config, "eos_token_id");
  c.pad_token_id = optional_id(config, "pad_token_id");
  return c;
}

}  // namespace destein

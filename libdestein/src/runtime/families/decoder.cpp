#include "runtime/families/decoder.hpp"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>

#include "check.hpp"
#include "destein/runtime/device.hpp"
#include "runtime/hook_runner.hpp"
#include "runtime/row_stable.hpp"

namespace destein {

// ---------------------------------------------------------------------------------------
// Weights

WeightFetcher::WeightFetcher(const Checkpoint& checkpoint, const ModelOptions& options)
    : checkpoint_(checkpoint), options_(options) {}

bool WeightFetcher::has(const std::string& name) const {
  return checkpoint_.tensors.count(name) > 0;
}

at::Tensor WeightFetcher::get(const std::string& name, const std::vector<int64_t>& shape) {
  auto it = checkpoint_.tensors.find(name);
  DESTEIN_CHECK_IO(it != checkpoint_.tensors.end(),
                   "{}: parameter '{}' is missing (model_type {}; expected shape {})",
                   checkpoint_.source.string(), name, checkpoint_.config.model_type,
                   c10::str(c10::IntArrayRef(shape)));
  const at::Tensor& t = it->second;
  DESTEIN_CHECK_IO(shape.empty() || t.sizes() == c10::IntArrayRef(shape),
                   "{}: parameter '{}' has shape {}, expected {} (from config.json)",
                   checkpoint_.source.string(), name, c10::str(t.sizes()),
                   c10::str(c10::IntArrayRef(shape)));
  DESTEIN_CHECK_IO(at::isFloatingType(t.scalar_type()),
                   "{}: parameter '{}' has dtype {}, expected a floating type",
                   checkpoint_.source.string(), name, c10::toString(t.scalar_type()));
  return t.to(options_.device, options_.dtype).contiguous();
}

at::Tensor WeightFetcher::get_optional(const std::string& name, const std::vector<int64_t>& shape) {
  return has(name) ? get(name, shape) : at::Tensor();
}

// ---------------------------------------------------------------------------------------
// Cache

void KVCache::select_rows(const at::Tensor& rows) {
  for (auto& k : keys_) k = k.index_select(0, rows.to(k.device()));
  for (auto& v : values_) v = v.index_select(0, rows.to(v.device()));
  batch_ = rows.size(0);
}

// ---------------------------------------------------------------------------------------
// Model

DecoderModel::DecoderModel(ModelConfig config, Architecture arch, DecoderWeights weights,
                           const ModelOptions& options)
    : arch_(std::move(arch)), weights_(std::move(weights)) {
  config_ = std::move(config);
  device_ = options.device;
  dtype_ = options.dtype;
  if (arch_.positions == PositionKind::kRotary) {
    inv_freqs_.push_back(
        rope_inv_freq(config_.rope_theta, config_.head_dim, arch_.rope_scaling).to(device_));
    layer_rope_.assign(static_cast<size_t>(config_.n_layers), 0);
    if (arch_.rope_local_theta > 0) {
      // Gemma 3: the sliding layers rotate with their own base and no scaling.
      inv_freqs_.push_back(
          rope_inv_freq(arch_.rope_local_theta, config_.head_dim, RopeScaling{}).to(device_));
      for (int64_t l = 0; l < config_.n_layers; ++l) {
        if (!arch_.sliding_layers.empty() && arch_.sliding_layers[static_cast<size_t>(l)]) {
          layer_rope_[static_cast<size_t>(l)] = 1;
        }
      }
    }
  }
  DESTEIN_CHECK_ARG(arch_.sliding_layers.empty() ||
                        static_cast<int64_t>(arch_.sliding_layers.size()) == config_.n_layers,
                    "sliding_layers lists {} layers, the model has {}", arch_.sliding_layers.size(),
                    config_.n_layers);
  if (arch_.alibi)
    slopes_ = alibi_slopes(config_.n_heads, arch_.alibi_bias_max).view({1, -1, 1, 1}).to(device_);
  // Count each stored tensor once (tied heads share the embedding).
  std::set<const void*> seen;
  auto count = [&](const at::Tensor& t) {
    if (t.defined() && seen.insert(t.data_ptr()).second) parameter_count_ += t.numel();
  };
  count(weights_.token_embedding);
  count(weights_.position_embedding);
  count(weights_.project_in.weight);
  count(weights_.project_out.weight);
  count(weights_.final_norm.weight);
  count(weights_.final_norm.bias);
  count(weights_.lm_head);
  for (const auto& l : weights_.layers) {
    for (const at::Tensor* t :
         {&l.attn_norm.weight, &l.attn_norm.bias, &l.mlp_norm.weight, &l.mlp_norm.bias,
          &l.qkv.weight, &l.qkv.bias, &l.out.weight, &l.out.bias, &l.fc_in.weight, &l.fc_in.bias,
          &l.fc_out.weight, &l.fc_out.bias, &l.q_norm.weight, &l.q_norm.bias, &l.k_norm.weight,
          &l.k_norm.bias, &l.post_attn_norm.weight, &l.post_mlp_norm.weight}) {
      count(*t);
    }
  }
  lm_head_.weight = weights_.lm_head;
  if (!config_.tie_word_embeddings) weights_.lm_head = at::Tensor();  // lm_head_ owns it now
  const bool cpu_f32 = device_.is_cpu() && dtype_ == at::kFloat;
  const bool onednn_possible = at::hasMKLDNN() && cpu_f32;
  DESTEIN_CHECK_ARG(options.linear_backend != LinearBackend::kOneDnn || onednn_possible,
                    "linear backend onednn needs float32 on cpu and a LibTorch built with oneDNN");
  DESTEIN_CHECK_ARG(options.linear_backend != LinearBackend::kStable || cpu_f32,
                    "linear backend stable needs float32 on cpu (found {} on {}); use auto or blas",
                    c10::toString(dtype_), device_.str());
  // Auto takes the row-stable kernels on CPU float32: with them a row's result does not
  // depend on the batch it shares (BLAS and oneDNN pick kernels by the row count), so an
  // evaluation gives the same text whatever the prompts per batch (docs/performance.md).
  const bool stable = options.linear_backend == LinearBackend::kStable ||
                      (options.linear_backend == LinearBackend::kAuto && cpu_f32);
  // oneDNN packing only on request: auto prefers the stable kernels on CPU float32.
  const bool pack = onednn_possible && options.linear_backend == LinearBackend::kOneDnn;
  prepare_linears(pack, stable);
}

void DecoderModel::prepare_linears(bool pack, bool stable) {
  auto prepare = [pack, stable](Linear& l, bool allow_pack) {
    if (!l.weight.defined()) return;
    l.out_features = l.weight.size(0);
    if (stable) {
      l.stable_weight = detail::pack_stable_weight(l.weight.t());
      l.weight = at::Tensor();
      return;
    }
    l.weight_t = l.weight.t().contiguous();
    if (pack && allow_pack) {
      l.packed_weight = l.weight.contiguous().to_mkldnn();
      if (l.bias.defined()) l.packed_bias = l.bias.contiguous().to_mkldnn();
    }
    l.weight = at::Tensor();
  };
  for (auto& layer : weights_.layers) {
    prepare(layer.qkv, true);
    prepare(layer.out, true);
    prepare(layer.fc_in, true);
    prepare(layer.fc_out, true);
  }
  prepare(weights_.project_in, true);
  prepare(weights_.project_out, true);
  // The output head stays on the GEMM path: oneDNN measured 1.5-8x slower on a
  // 50k-row head than a plain GEMM on the (in, out) layout.
  prepare(lm_head_, false);
  if (pack) linear_backend_ = LinearBackend::kOneDnn;
  if (stable) linear_backend_ = LinearBackend::kStable;
  stable_ = stable;
}

at::Tensor rope_inv_freq(double theta, int64_t head_dim, const RopeScaling& scaling) {
  // Hugging Face computes the inverse frequencies in float32; so do we.
  at::Tensor exponents = at::arange(0, head_dim, 2, at::kFloat) / static_cast<float>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(at::scalar_tensor(theta, at::kFloat), exponents);
  if (scaling.type == "linear") return inv_freq / scaling.factor;
  if (scaling.type == "llama3") {
    // Llama 3.1: wavelengths longer than the original context / low_freq_factor are divided
    // by factor, those shorter than context / high_freq_factor are kept, and the band
    // between is interpolated by how many wavelengths fit in the original context.
    const double context = static_cast<double>(scaling.original_max_positions);
    const double low_wavelen = context / scaling.low_freq_factor;
    const double high_wavelen = context / scaling.high_freq_factor;
    // Python's scalar / tensor is reciprocal() * scalar: written so, to round alike.
    at::Tensor wavelen = inv_freq.reciprocal() * (2 * M_PI);
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq);
    at::Tensor smooth = (wavelen.reciprocal() * context - scaling.low_freq_factor) /
                        (scaling.high_freq_factor - scaling.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled;
    at::Tensor medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
    return at::where(medium, smoothed, scaled);
  }
  DESTEIN_CHECK_ARG(scaling.type == "default", "rope scaling type '{}' is not implemented",
                    scaling.type);
  return inv_freq;
}

int64_t DecoderModel::window_of(int64_t layer) const {
  if (!config_.sliding_window) return 0;
  if (!arch_.sliding_layers.empty() && !arch_.sliding_layers[static_cast<size_t>(layer)]) return 0;
  return *config_.sliding_window;
}

KVCache DecoderModel::make_cache(int64_t batch, int64_t capacity) const {
  DESTEIN_CHECK_ARG(batch > 0 && capacity > 0,
                    "make_cache: batch ({}) and capacity ({}) must be positive", batch, capacity);
  KVCache cache;
  auto opts = at::TensorOptions().dtype(dtype_).device(device_);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    cache.keys_.push_back(at::empty({batch, config_.n_kv_heads, capacity, config_.head_dim}, opts));
    cache.values_.push_back(
        at::empty({batch, config_.n_kv_heads, capacity, config_.head_dim}, opts));
  }
  cache.capacity_ = capacity;
  cache.batch_ = batch;
  return cache;
}

namespace {

bool present(const Linear& l) {
  return l.weight_t.defined() || l.weight.defined() || l.stable_weight.defined();
}

// Below this many rows (decoding a few sequences) oneDNN's inner product is slower than a
// plain GEMM on the (in, out) layout; above it, much faster (docs/performance.md).
constexpr int64_t kPackedMinRows = 8;

at::Tensor linear(const at::Tensor& x, const Linear& l) {
  auto sizes = x.sizes().vec();
  at::Tensor x2 = x.reshape({-1, sizes.back()});
  sizes.back() = l.out_features;
  if (l.stable_weight.defined()) {
    return detail::stable_linear(x2.contiguous(), l.stable_weight, l.out_features, l.bias)
        .view(sizes);
  }
  if (l.packed_weight.defined() && x2.size(0) >= kPackedMinRows) {
    at::Tensor xm = x2.contiguous().to_mkldnn();
    at::Tensor y = l.packed_bias.defined() ? at::mkldnn_linear(xm, l.packed_weight, l.packed_bias)
                                           : at::mkldnn_linear(xm, l.packed_weight);
    return y.to_dense().view(sizes);
  }
  at::Tensor y = l.bias.defined() ? at::addmm(l.bias, x2, l.weight_t) : at::mm(x2, l.weight_t);
  return y.view(sizes);
}

at::Tensor activate(const at::Tensor& x, const std::string& name) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    return at::gelu(x, "tanh");
  if (name == "gelu") return at::gelu(x);
  if (name == "relu") return at::relu(x);
  if (name == "silu" || name == "swish") return at::silu(x);
  throw std::invalid_argument(
      fmt::format("unsupported activation '{}': expected gelu_new, gelu, relu or silu", name));
}

// (..., Dh) -> (..., Dh): the rotate-half of Hugging Face's LLaMA.
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor DecoderModel::norm(const at::Tensor& x, const Norm& n) const {
  if (arch_.norm == NormKind::kLayerNorm) {
    return at::layer_norm(x, {x.size(-1)}, n.weight, n.bias, config_.norm_eps);
  }
  // RMSNorm as Hugging Face computes it: in float32, weight applied after the cast back.
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.norm_eps);
  if (arch_.norm == NormKind::kRMSNormPlusOne) {
    // Gemma: the (1 + w) scale applied in float32, before the cast back.
    return (normed * (1.0 + n.weight.to(at::kFloat))).to(x.scalar_type());
  }
  return n.weight * normed.to(x.scalar_type());
}

at::Tensor DecoderModel::mlp(const at::Tensor& x, const LayerWeights& w) const {
  at::Tensor h = linear(x, w.fc_in);
  if (arch_.mlp == MlpKind::kGated) {
    auto parts = h.chunk(2, -1);  // [gate, up]
    h = activate(parts[0], arch_.activation) * parts[1];
  } else {
    h = activate(h, arch_.activation);
  }
  return linear(h, w.fc_out);
}

ForwardOutput DecoderModel::forward(const at::Tensor& input_ids, const ForwardOptions& opt) const {
  const ModelConfig& c = config_;
  DESTEIN_CHECK_ARG(input_ids.defined() && input_ids.dim() == 2 && input_ids.size(1) > 0,
                    "forward: input_ids must be (batch, seq) with seq > 0, found {}",
                    input_ids.defined() ? c10::str(input_ids.sizes()) : "undefined");
  DESTEIN_CHECK_ARG(!at::isFloatingType(input_ids.scalar_type()),
                    "forward: input_ids must hold integer token ids, found {}",
                    c10::toString(input_ids.scalar_type()));
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  at::Tensor ids = input_ids.to(device_, at::kLong);
  {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    DESTEIN_CHECK_ARG(lo >= 0 && hi < c.vocab_size,
                      "forward: token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi,
                      c.vocab_size);
  }
  if (opt.hooks && !opt.hooks->empty()) {
    DESTEIN_CHECK_ARG(opt.hooks->max_layer() < c.n_layers,
                      "forward: a hook names layer {}, but the model has layers 0..{}",
                      opt.hooks->max_layer(), c.n_layers - 1);
  }
  KVCache* cache = opt.cache;
  const int64_t past = cache ? cache->length_ : 0;
  const int64_t total = past + T;
  if (cache) {
    DESTEIN_CHECK_ARG(cache->batch_ == B, "forward: cache holds {} rows, input has {}",
                      cache->batch_, B);
    DESTEIN_CHECK_ARG(total <= cache->capacity_,
                      "forward: cache capacity {} is too small for {} cached + {} new positions",
                      cache->capacity_, past, T);
  }

  // (B, total) bool: which timeline positions hold real tokens.
  at::Tensor key_mask;
  if (opt.attention_mask.defined()) {
    DESTEIN_CHECK_ARG(opt.attention_mask.dim() == 2 && opt.attention_mask.size(0) == B &&
                          opt.attention_mask.size(1) == total,
                      "forward: attention_mask must be ({}, {}) = (batch, cached + new), found {}",
                      B, total, c10::str(opt.attention_mask.sizes()));
    key_mask = opt.attention_mask.to(device_).ne(0);
  } else {
    key_mask = at::ones({B, total}, at::TensorOptions().dtype(at::kBool).device(device_));
  }
  // Position of a token = number of real tokens before it, as HF generate() computes it.
  at::Tensor timeline_positions =
      (key_mask.to(at::kLong).cumsum(1) - 1).clamp_min(0);       // (B, total)
  at::Tensor positions = timeline_positions.narrow(1, past, T);  // (B, T)
  at::Tensor token_mask = key_mask.narrow(1, past, T);           // (B, T)
  {
    const int64_t max_pos = positions.max().item<int64_t>();
    DESTEIN_CHECK_ARG(max_pos < c.max_positions,
                      "forward: position {} is past the model's limit of {} positions "
                      "(max_position_embeddings / n_positions)",
                      max_pos, c.max_positions);
  }

  // Additive attention bias (B, 1, T, total) in f32: 0 where a query may look, the most
  // negative finite float elsewhere (finite so that fully masked padding rows stay finite
  // and cannot poison real rows through 0 * NaN).
  // The row-stable attention has no ALiBi term and no soft-capping: those models take the
  // masked softmax, whose sums may regroup with the padding width (last bits only).
  const bool stable_attention = stable_ && !arch_.alibi && !arch_.attn_softcap;
  // One bias per distinct sliding window (Gemma alternates two), made on first use.
  std::map<int64_t, at::Tensor> biases;
  auto bias_for = [&](int64_t window) -> const at::Tensor& {
    auto found = biases.find(window);
    if (found != biases.end()) return found->second;
    at::Tensor bias;
    at::Tensor q_index =
        at::arange(past, total, at::TensorOptions().dtype(at::kLong).device(device_));
    at::Tensor k_index = at::arange(0, total, at::TensorOptions().dtype(at::kLong).device(device_));
    at::Tensor allowed = k_index.unsqueeze(0) <= q_index.unsqueeze(1);  // (T, total)
    if (window > 0) {
      allowed = allowed & (k_index.unsqueeze(0) > q_index.unsqueeze(1) - window);
    }
    allowed = allowed.unsqueeze(0) & key_mask.unsqueeze(1);  // (B, T, total)
    if (arch_.alibi) {
      // ALiBi (B, H, T, total): slope_h * (key position - query position), the positions
      // counting real tokens only, so a left-padded row sees the biases it sees alone.
      // MPT adds slope_h * (key index - last index) instead: the same up to a constant per
      // query row, which softmax cancels.
      at::Tensor distance = (timeline_positions.unsqueeze(1) - positions.unsqueeze(2))
                                .to(at::kFloat);  // (B, T, total)
      bias = (slopes_ * distance.unsqueeze(1))
                 .masked_fill_(allowed.logical_not().unsqueeze(1),
                               std::numeric_limits<float>::lowest());
    } else {
      bias = at::zeros({B, T, total}, at::TensorOptions().dtype(at::kFloat).device(device_))
                 .masked_fill_(allowed.logical_not(), std::numeric_limits<float>::lowest())
                 .unsqueeze(1);
    }
    return biases.emplace(window, std::move(bias)).first->second;
  };

  std::vector<std::pair<at::Tensor, at::Tensor>>
      rotations;  // per inv_freqs_ entry: cos, sin (B, 1, T, Dh)
  for (const at::Tensor& inv_freq : inv_freqs_) {
    at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // (B, T, Dh/2)
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    rotations.emplace_back(emb.cos().to(dtype_).unsqueeze(1), emb.sin().to(dtype_).unsqueeze(1));
  }

  const Hooks* hooks = (opt.hooks && !opt.hooks->empty()) ? opt.hooks : nullptr;
  auto hook = [&](int64_t layer, HookSite site, at::Tensor x) {
    if (hooks && hooks->has(layer, site))
      return HookRunner::run(*hooks, layer, site, std::move(x), token_mask, past);
    return x;
  };

  at::Tensor x = at::embedding(weights_.token_embedding, ids);  // (B, T, E)
  // Gemma: times sqrt(d) rounded to the embedding dtype first, as Hugging Face does.
  if (arch_.embedding_scale > 0) x = x * at::scalar_tensor(arch_.embedding_scale, x.options());
  if (present(weights_.project_in)) x = linear(x, weights_.project_in);
  if (arch_.positions == PositionKind::kLearned) {
    x = x + at::embedding(weights_.position_embedding, positions + weights_.position_offset);
  }

  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, Dh = c.head_dim, G = H / Hkv;
  const double scale =
      arch_.softmax_scale > 0 ? arch_.softmax_scale : 1.0 / std::sqrt(static_cast<double>(Dh));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    x = hook(l, HookSite::kResidPre, std::move(x));  // (B, T, d)

    at::Tensor h = arch_.pre_norm ? norm(x, w.attn_norm) : x;
    at::Tensor qkv = linear(h, w.qkv);  // (B, T, (H + 2 Hkv) Dh)
    if (arch_.clip_qkv) qkv = qkv.clamp(-*arch_.clip_qkv, *arch_.clip_qkv);
    at::Tensor q_flat = qkv.narrow(-1, 0, H * Dh), k_flat = qkv.narrow(-1, H * Dh, Hkv * Dh);
    if (w.q_norm.weight.defined() &&
        !arch_.qk_norm_per_head) {  // MPT qk_ln: one LayerNorm over all heads
      q_flat = at::layer_norm(q_flat, {H * Dh}, w.q_norm.weight, w.q_norm.bias, c.norm_eps);
      k_flat = at::layer_norm(k_flat, {Hkv * Dh}, w.k_norm.weight, w.k_norm.bias, c.norm_eps);
    }
    at::Tensor q = q_flat.view({B, T, H, Dh});
    at::Tensor k = k_flat.view({B, T, Hkv, Dh});
    if (arch_.qk_norm_per_head) {  // Qwen3, Gemma 3: each head normalised alone, before RoPE
      q = norm(q, w.q_norm);
      k = norm(k, w.k_norm);
    }
    q = q.transpose(1, 2);  // (B, H, T, Dh)
    k = k.transpose(1, 2);  // (B, Hkv, T, Dh)
    at::Tensor v = qkv.narrow(-1, (H + Hkv) * Dh, Hkv * Dh).view({B, T, Hkv, Dh}).transpose(1, 2);
    if (arch_.positions == PositionKind::kRotary) {
      const auto& [cos, sin] = rotations[static_cast<size_t>(layer_rope_[static_cast<size_t>(l)])];
      q = q * cos + rotate_half(q) * sin;
      k = k * cos + rotate_half(k) * sin;
    }
    const int64_t window = window_of(l);
    at::Tensor keys = k, values = v;  // (B, Hkv, S, Dh)
    if (cache) {
      cache->keys_[l].narrow(2, past, T).copy_(k);
      cache->values_[l].narrow(2, past, T).copy_(v);
      keys = cache->keys_[l].narrow(2, 0, total);
      values = cache->values_[l].narrow(2, 0, total);
    }
    at::Tensor z;  // (B, T, H, Dh)
    if (stable_attention) {
      // Each query over exactly its own visible keys: nothing depends on the padding.
      auto planes = [Dh](const at::Tensor& t) {
        return t.stride(3) == 1 && (t.stride(2) == Dh || t.size(2) == 1) ? t : t.contiguous();
      };
      z = detail::stable_attention((q * scale).transpose(1, 2).contiguous(), planes(keys),
                                   planes(values), key_mask, past, window);
    } else {
      // Grouped-query attention without copying K/V: the G query heads that share a KV
      // head are stacked along the query axis.
      at::Tensor qg = (q * scale).reshape({B, Hkv, G * T, Dh});
      at::Tensor scores =
          at::matmul(qg, keys.transpose(2, 3)).view({B, H, T, total});  // (B, H, T, S)
      if (arch_.attn_softcap) scores = at::tanh(scores / *arch_.attn_softcap) * *arch_.attn_softcap;
      at::Tensor probs = (scores.to(at::kFloat) + bias_for(window)).softmax(-1).to(dtype_);
      z = at::matmul(probs.view({B, Hkv, G * T, total}), values)  // (B, Hkv, G T, Dh)
              .view({B, H, T, Dh})
              .transpose(1, 2);  // (B, T, H, Dh)
    }
    z = hook(l, HookSite::kAttnZ, std::move(z));
    at::Tensor attn_out = linear(z.reshape({B, T, H * Dh}), w.out);  // (B, T, d)
    // Gemma's post-attention norm belongs to the attention output: the hook sees what is
    // added to the residual stream, as in every other family.
    if (w.post_attn_norm.weight.defined()) attn_out = norm(attn_out, w.post_attn_norm);
    attn_out = hook(l, HookSite::kAttnOut, std::move(attn_out));

    x = x + attn_out;
    if (!arch_.pre_norm) x = norm(x, w.attn_norm);
    at::Tensor mlp_out = mlp(arch_.pre_norm ? norm(x, w.mlp_norm) : x, w);
    if (w.post_mlp_norm.weight.defined()) mlp_out = norm(mlp_out, w.post_mlp_norm);
    mlp_out = hook(l, HookSite::kMlpOut, std::move(mlp_out));
    x = x + mlp_out;
    if (!arch_.pre_norm) x = norm(x, w.mlp_norm);
    x = hook(l, HookSite::kResidPost, std::move(x));
  }
  if (cache) cache->length_ = total;

  ForwardOutput out;
  if (opt.logits == LogitsFor::kNone) return out;
  if (opt.logits == LogitsFor::kLast) x = x.narrow(1, T - 1, 1);
  if (weights_.final_norm.weight.defined()) x = norm(x, weights_.final_norm);
  if (present(weights_.project_out)) x = linear(x, weights_.project_out);
  out.logits = linear(x, lm_head_).to(at::kFloat);  // (B, T or 1, V)
  if (arch_.logit_scale != 1.0) out.logits.mul_(arch_.logit_scale);
  if (arch_.final_softcap)
    out.logits = at::tanh(out.logits / *arch_.final_softcap) * *arch_.final_softcap;
  return out;
}

at::Tensor alibi_slopes(int64_t n_heads, double alibi_bias_max) {
  int64_t padded = 1;
  while (padded < n_heads) padded *= 2;
  at::Tensor m =
      at::arange(1, padded + 1, at::kFloat) * static_cast<float>(alibi_bias_max / padded);
  at::Tensor slopes = 1.0 / at::pow(2.0, m);  // (H')
  if (padded != n_heads) {
    slopes = at::cat({slopes.slice(0, 1, padded, 2), slopes.slice(0, 0, padded, 2)})
                 .narrow(0, 0, n_heads);
  }
  return slopes;
}

// ---------------------------------------------------------------------------------------
// Factory

namespace {
const std::map<std::string, void (*)(WeightFetcher&, Architecture&, DecoderWeights&)>& families() {
  static const std::map<std::string, void (*)(WeightFetcher&, Architecture&, DecoderWeights&)>
      table = {{"gpt2", &build_gpt2},   {"llama", &build_llama},  {"mistral", &build_llama},
               {"opt", &build_opt},     {"mpt", &build_mpt},      {"qwen2", &build_llama},
               {"qwen3", &build_llama}, {"gemma2", &build_gemma}, {"gemma3_text", &build_gemma}};
  return table;
}
}  // namespace

LinearBackend parse_linear_backend(const std::string& name) {
  if (name == "auto") return LinearBackend::kAuto;
  if (name == "blas") return LinearBackend::kBlas;
  if (name == "onednn") return LinearBackend::kOneDnn;
  if (name == "stable") return LinearBackend::kStable;
  throw std::invalid_argument(
      fmt::format("unknown linear backend '{}': expected auto, blas, onednn or stable", name));
}

std::string linear_backend_name(LinearBackend backend) {
  switch (backend) {
    case LinearBackend::kAuto:
      return "auto";
    case LinearBackend::kBlas:
      return "blas";
    case LinearBackend::kOneDnn:
      return "onednn";
    case LinearBackend::kStable:
      return "stable";
  }
  return "unknown";
}

std::vector<std::string> known_model_types() {
  std::vector<std::string> names;
  for (const auto& [name, fn] : families()) names.push_back(name);
  return names;
}

std::unique_ptr<Model> build_model(const Checkpoint& checkpoint, const ModelOptions& options) {
  set_threads(options.threads);
  auto it = families().find(checkpoint.config.model_type);
  DESTEIN_CHECK_ARG(it != families().end(), "{}: unknown model_type '{}': known are {}",
                    checkpoint.source.string(), checkpoint.config.model_type,
                    fmt::join(known_model_types(), ", "));
  DESTEIN_CHECK_ARG(!(options.device.is_cpu() && options.dtype == c10::kHalf),
                    "float16 compute is not supported on cpu by LibTorch; use float32 or "
                    "bfloat16 on cpu, or float16 on cuda");
  DESTEIN_CHECK_ARG(at::isFloatingType(options.dtype),
                    "compute dtype must be floating point, found {}", c10::toString(options.dtype));
  WeightFetcher fetch(checkpoint, options);
  Architecture arch;
  DecoderWeights weights;
  it->second(fetch, arch, weights);
  activate(at::zeros({1}), arch.activation);  // reject an unsupported activation at load time
  return std::make_unique<DecoderModel>(checkpoint.config, std::move(arch), std::move(weights),
                                        options);
}

std::unique_ptr<Model> load_model(const std::filesystem::path& path, const ModelOptions& options) {
  return build_model(load_checkpoint(path), options);
}

}  // namespace destein

// DeBERTa-v2 / v3 (DebertaV2ForSequenceClassification): post-norm layers whose attention
// adds disentangled relative-position terms (content-to-position c2p, position-to-content
// p2c) over log-bucketed relative positions; the head is the ContextPooler (dense + act on
// [CLS]) and a classifier.

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "check.hpp"
#include "runtime/encoders/encoder_classifier.hpp"

namespace destein::encoders {

namespace {

struct DebertaLayer {
  Linear query, key, value, attention_out, intermediate, output;
  // The relative embeddings projected by this layer, which do not depend on the input:
  // (H, 2S, Dh) keys for c2p and queries for p2c.
  at::Tensor pos_key, pos_query;
  LayerNorm attention_norm, output_norm;
};

class DebertaV2Classifier : public EncoderClassifier {
 public:
  DebertaV2Classifier(const EncoderConfig& c, const EncoderWeights& w, int64_t num_labels) {
    c.refuse_unless("conv_kernel_size", {0});
    c.refuse_unless("relative_attention", {true});
    c.refuse_unless("attention_head_size", {nullptr});
    c.refuse_unless("embedding_size", {c.root().value("hidden_size", nlohmann::json())});
    const EncoderShape shape = bert_style_shape(c);
    const int64_t V = shape.vocab, D = shape.hidden, L = shape.layers, F = shape.intermediate;
    heads_ = shape.heads;
    positions_ = shape.positions;
    const int64_t types = c.integer_or("type_vocab_size", 0);
    const double eps = c.number_or("layer_norm_eps", 1e-7);
    act_ = activation_of(c, "hidden_act", "gelu");
    pooler_act_ = activation_of(c, "pooler_hidden_act", "gelu");
    DESTEIN_CHECK_IO(c.integer_or("pooler_hidden_size", D) == D,
                     "{}: 'pooler_hidden_size' {} differs from 'hidden_size' {}, which the "
                     "ContextPooler does not allow",
                     c.file(), c.integer_or("pooler_hidden_size", D), D);
    max_relative_ = c.signed_integer_or("max_relative_positions", -1);
    if (max_relative_ < 1) max_relative_ = positions_;
    buckets_ = c.signed_integer_or("position_buckets", -1);
    span_ = buckets_ > 0 ? buckets_ : max_relative_;
    share_att_key_ = c.boolean_or("share_att_key", false);

    // pos_att_type: a list (v3 configs) or a "c2p|p2c" string (older ones).
    const auto& root = c.root();
    std::vector<std::string> att_types;
    if (root.contains("pos_att_type") && root["pos_att_type"].is_array()) {
      for (const auto& t : root["pos_att_type"]) att_types.push_back(t.get<std::string>());
    } else if (root.contains("pos_att_type") && root["pos_att_type"].is_string()) {
      std::string s = root["pos_att_type"];
      for (size_t start = 0; start <= s.size();) {
        size_t end = s.find('|', start);
        if (end == std::string::npos) end = s.size();
        if (end > start) att_types.push_back(s.substr(start, end - start));
        start = end + 1;
      }
    }
    for (const auto& t : att_types) {
      DESTEIN_CHECK_IO(t == "c2p" || t == "p2c",
                       "{}: 'pos_att_type' \"{}\" is not implemented (implemented: c2p, p2c)",
                       c.file(), t);
      c2p_ = c2p_ || t == "c2p";
      p2c_ = p2c_ || t == "p2c";
    }
    std::string norm_rel = c.string_or("norm_rel_ebd", "none");
    DESTEIN_CHECK_IO(norm_rel == "none" || norm_rel == "layer_norm",
                     "{}: 'norm_rel_ebd' \"{}\" is not implemented (implemented: none, layer_norm)",
                     c.file(), norm_rel);

    const std::string e = "deberta.embeddings.";
    word_ = w.take(e + "word_embeddings.weight", {V, D});
    if (c.boolean_or("position_biased_input", true)) {
      position_ = w.take(e + "position_embeddings.weight", {positions_, D});
    }
    if (types > 0) token_type_ = w.take(e + "token_type_embeddings.weight", {types, D});
    embed_norm_ = take_layer_norm(w, e + "LayerNorm", D, eps);
    rel_embeddings_ = w.take("deberta.encoder.rel_embeddings.weight", {2 * span_, D});
    if (norm_rel == "layer_norm")
      rel_embeddings_ = take_layer_norm(w, "deberta.encoder.LayerNorm", D, eps)(rel_embeddings_);
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = fmt::format("deberta.encoder.layer.{}.", i);
      DebertaLayer l;
      l.query = take_linear(w, p + "attention.self.query_proj", D, D);
      l.key = take_linear(w, p + "attention.self.key_proj", D, D);
      l.value = take_linear(w, p + "attention.self.value_proj", D, D);
      auto heads = [&](const at::Tensor& t) {  // (2S, D) -> (H, 2S, Dh)
        return t.view({t.size(0), heads_, D / heads_}).transpose(0, 1).contiguous();
      };
      if (c2p_) {
        const Linear proj =
            share_att_key_ ? l.key : take_linear(w, p + "attention.self.pos_key_proj", D, D);
        l.pos_key = heads(proj(rel_embeddings_));
      }
      if (p2c_) {
        const Linear proj =
            share_att_key_ ? l.query : take_linear(w, p + "attention.self.pos_query_proj", D, D);
        l.pos_query = heads(proj(rel_embeddings_));
      }
      l.attention_out = take_linear(w, p + "attention.output.dense", D, D);
      l.attention_norm = take_layer_norm(w, p + "attention.output.LayerNorm", D, eps);
      l.intermediate = take_linear(w, p + "intermediate.dense", F, D);
      l.output = take_linear(w, p + "output.dense", D, F);
      l.output_norm = take_layer_norm(w, p + "output.LayerNorm", D, eps);
      layers_.push_back(std::move(l));
    }
    pooler_ = take_linear(w, "pooler.dense", D, D);
    classifier_ = take_linear(w, "classifier", num_labels, D);
  }

  int64_t max_positions() const override { return positions_; }

  at::Tensor logits(const at::Tensor& ids, const at::Tensor& mask) const override {
    const int64_t B = ids.size(0), T = ids.size(1), D = word_.size(1), H = heads_, Dh = D / H;
    at::Tensor x = at::embedding(word_, ids);  // (B, T, D)
    if (position_.defined()) x = x + at::embedding(position_, at::arange(T, ids.options()));
    if (token_type_.defined()) x = x + token_type_[0];
    x = embed_norm_(x) * mask.unsqueeze(2).to(x.scalar_type());

    const at::Tensor rel = relative_positions(T, ids.device());  // (T, T) bucketed q - k
    // Of the 2S relative embeddings, each (query, key) pair reads one: (T, T) indices.
    const at::Tensor c2p_index = at::clamp(rel + span_, 0, 2 * span_ - 1).flatten();
    const at::Tensor p2c_index = at::clamp(-rel + span_, 0, 2 * span_ - 1).flatten();
    const double factor = 1 + (c2p_ ? 1 : 0) + (p2c_ ? 1 : 0);
    const double scale = std::sqrt(static_cast<double>(Dh) * factor);
    // Padding keys are masked for every query, as DeBERTa's (B, 1, T, T) mask does.
    const at::Tensor keep = mask.to(at::kBool).view({B, 1, 1, T});

    auto heads_of = [&](const at::Tensor& t) {
      return t.view({t.size(0), t.size(1), H, Dh}).transpose(1, 2);
    };
    for (const auto& l : layers_) {
      const at::Tensor q = heads_of(l.query(x)), k = heads_of(l.key(x)),
                       v = heads_of(l.value(x));                       // (B, H, T, Dh)
      at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / scale;  // (B, H, T, T)
      if (c2p_) {
        // c2p[b, h, i, j] = q[b, h, i] . pos_key[h, clamp(rel[i, j] + S)]
        const at::Tensor keys = l.pos_key.index_select(1, c2p_index).view({H, T, T, Dh});
        scores = scores + at::einsum("bhid,hijd->bhij", {q, keys}) / scale;
      }
      if (p2c_) {
        // p2c[b, h, i, j] = k[b, h, j] . pos_query[h, clamp(-rel[j, i] + S)]
        const at::Tensor queries = l.pos_query.index_select(1, p2c_index).view({H, T, T, Dh});
        scores = scores + at::einsum("bhjd,hjid->bhij", {k, queries}) / scale;
      }
      scores = scores.masked_fill(keep.logical_not(), std::numeric_limits<float>::lowest());
      const at::Tensor context =
          at::matmul(scores.softmax(-1), v).transpose(1, 2).reshape({B, T, D});
      x = l.attention_norm(l.attention_out(context) + x);
      x = l.output_norm(l.output(act_(l.intermediate(x))) + x);
    }
    return classifier_(pooler_act_(pooler_(x.select(1, 0))));  // (B, C)
  }

 private:
  // make_log_bucket_position: exact offsets within +-buckets/2, logarithmic beyond, up to
  // max_relative_positions.
  at::Tensor relative_positions(int64_t T, c10::Device device) const {
    const at::Tensor idx = at::arange(T, at::TensorOptions().dtype(at::kLong));
    at::Tensor rel = idx.unsqueeze(1) - idx.unsqueeze(0);  // (T, T) q - k
    if (buckets_ > 0 && max_relative_ > 0) {
      const int64_t mid = buckets_ / 2;
      // In float32, as the reference computes it, so that ceil() falls the same way.
      const at::Tensor relf = rel.to(at::kFloat);
      const at::Tensor sign = at::sign(relf);
      const at::Tensor abs_pos =
          at::where((rel < mid).logical_and(rel > -mid), at::full_like(relf, mid - 1), relf.abs());
      const at::Tensor log_span =
          at::log(at::scalar_tensor(static_cast<double>(max_relative_ - 1) / mid, at::kFloat));
      const at::Tensor log_pos = at::ceil(at::log(abs_pos / mid) / log_span * (mid - 1)) + mid;
      rel = at::where(abs_pos <= mid, relf, log_pos * sign).to(at::kLong);
    }
    return rel.to(device);
  }

  int64_t heads_ = 1, positions_ = 0, max_relative_ = 0, buckets_ = -1, span_ = 0;
  bool share_att_key_ = false, c2p_ = false, p2c_ = false;
  Activation act_ = nullptr, pooler_act_ = nullptr;
  at::Tensor word_, position_, token_type_, rel_embeddings_;
  LayerNorm embed_norm_;
  std::vector<DebertaLayer> layers_;
  Linear pooler_, classifier_;
};

}  // namespace

std::unique_ptr<EncoderClassifier> make_deberta_v2_classifier(const EncoderConfig& config,
                                                              const EncoderWeights& w,
                                                              int64_t num_labels) {
  return std::make_unique<DebertaV2Classifier>(config, w, num_labels);
}

}  // namespace destein::encoders

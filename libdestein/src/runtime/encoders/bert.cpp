// BERT (BertForSequenceClassification) and RoBERTa (RobertaForSequenceClassification): one
// post-norm encoder; they differ in the position ids, the token types and the head.

#include <fmt/format.h>

#include "check.hpp"
#include "runtime/encoders/encoder_classifier.hpp"

namespace destein::encoders {

namespace {

struct BertLayer {
  Linear query, key, value, attention_out, intermediate, output;
  LayerNorm attention_norm, output_norm;
};

enum class Head { kPoolerClassifier, kRobertaClassifier };

class BertEncoderClassifier : public EncoderClassifier {
 public:
  BertEncoderClassifier(const EncoderConfig& c, const EncoderWeights& w, int64_t num_labels,
                        const std::string& base, Head head)
      : head_(head) {
    c.refuse_unless("position_embedding_type", {"absolute"});
    const EncoderShape shape = bert_style_shape(c);
    const int64_t V = shape.vocab, D = shape.hidden, L = shape.layers, F = shape.intermediate;
    heads_ = shape.heads;
    positions_ = shape.positions;
    const int64_t types = c.integer_or("type_vocab_size", 2);
    const double eps = c.number_or("layer_norm_eps", 1e-12);
    act_ = activation_of(c, "hidden_act", "gelu");
    pad_id_ = c.integer_or("pad_token_id", head == Head::kRobertaClassifier ? 1 : 0);

    const std::string e = base + "embeddings.";
    word_ = w.take(e + "word_embeddings.weight", {V, D});
    position_ = w.take(e + "position_embeddings.weight", {positions_, D});
    token_type_ = w.take(e + "token_type_embeddings.weight", {types, D});
    embed_norm_ = take_layer_norm(w, e + "LayerNorm", D, eps);
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = fmt::format("{}encoder.layer.{}.", base, i);
      layers_.push_back({take_linear(w, p + "attention.self.query", D, D),
                         take_linear(w, p + "attention.self.key", D, D),
                         take_linear(w, p + "attention.self.value", D, D),
                         take_linear(w, p + "attention.output.dense", D, D),
                         take_linear(w, p + "intermediate.dense", F, D),
                         take_linear(w, p + "output.dense", D, F),
                         take_layer_norm(w, p + "attention.output.LayerNorm", D, eps),
                         take_layer_norm(w, p + "output.LayerNorm", D, eps)});
    }
    if (head == Head::kPoolerClassifier) {
      dense_ = take_linear(w, base + "pooler.dense", D, D);
      out_ = take_linear(w, "classifier", num_labels, D);
    } else {
      dense_ = take_linear(w, "classifier.dense", D, D);
      out_ = take_linear(w, "classifier.out_proj", num_labels, D);
    }
  }

  int64_t max_positions() const override {
    // RoBERTa's positions start after padding_idx (position ids padding_idx + 1 ...).
    return head_ == Head::kRobertaClassifier ? positions_ - pad_id_ - 1 : positions_;
  }

  at::Tensor logits(const at::Tensor& ids, const at::Tensor& mask) const override {
    const int64_t T = ids.size(1);
    at::Tensor position_ids;  // (B, T) or (T)
    if (head_ == Head::kRobertaClassifier) {
      // create_position_ids_from_input_ids: padding tokens keep padding_idx, the others
      // count up from padding_idx + 1.
      const at::Tensor not_pad = ids.ne(pad_id_).to(at::kLong);
      position_ids = at::cumsum(not_pad, 1) * not_pad + pad_id_;
    } else {
      position_ids = at::arange(T, ids.options());
    }
    // Token type 0 for every token: one text per input.
    at::Tensor x = at::embedding(word_, ids) + at::embedding(position_, position_ids) +
                   token_type_[0];  // (B, T, D)
    x = embed_norm_(x);
    const at::Tensor mask_add = additive_attention_mask(mask);
    for (const auto& l : layers_) {
      const at::Tensor attn = self_attention(x, l.query, l.key, l.value, heads_, mask_add);
      x = l.attention_norm(l.attention_out(attn) + x);
      x = l.output_norm(l.output(act_(l.intermediate(x))) + x);
    }
    const at::Tensor first = x.select(1, 0);  // (B, D): [CLS] / <s>
    return out_(at::tanh(dense_(first)));     // (B, C)
  }

 private:
  Head head_;
  int64_t heads_ = 1, positions_ = 0, pad_id_ = 0;
  Activation act_ = nullptr;
  at::Tensor word_, position_, token_type_;
  LayerNorm embed_norm_;
  std::vector<BertLayer> layers_;
  Linear dense_, out_;  // BERT: pooler + classifier; RoBERTa: classifier.dense + out_proj
};

}  // namespace

std::unique_ptr<EncoderClassifier> make_bert_classifier(const EncoderConfig& config,
                                                        const EncoderWeights& w,
                                                        int64_t num_labels) {
  return std::make_unique<BertEncoderClassifier>(config, w, num_labels, "bert.",
                                                 Head::kPoolerClassifier);
}

std::unique_ptr<EncoderClassifier> make_roberta_classifier(const EncoderConfig& config,
                                                           const EncoderWeights& w,
                                                           int64_t num_labels) {
  return std::make_unique<BertEncoderClassifier>(config, w, num_labels, "roberta.",
                                                 Head::kRobertaClassifier);
}

}  // namespace destein::encoders

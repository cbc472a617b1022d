// DistilBERT (DistilBertForSequenceClassification): BERT's post-norm layers without token
// types or pooler; the head is pre_classifier -> ReLU -> classifier on [CLS].

#include <fmt/format.h>

#include "check.hpp"
#include "runtime/encoders/encoder_classifier.hpp"

namespace destein::encoders {

namespace {

struct DistilBertLayer {
  Linear q, k, v, out, lin1, lin2;
  LayerNorm attention_norm, output_norm;
};

class DistilBertClassifier : public EncoderClassifier {
 public:
  DistilBertClassifier(const EncoderConfig& c, const EncoderWeights& w, int64_t num_labels) {
    const int64_t V = c.integer("vocab_size"), D = c.integer("dim"), L = c.integer("n_layers");
    const int64_t F = c.integer("hidden_dim");
    heads_ = c.integer("n_heads");
    DESTEIN_CHECK_IO(heads_ > 0 && D % heads_ == 0,
                     "{}: 'dim' {} is not a multiple of 'n_heads' {}", c.file(), D, heads_);
    positions_ = c.integer("max_position_embeddings");
    act_ = activation_of(c, "activation", "gelu");
    // DistilBERT's LayerNorms use eps 1e-12, which its config does not carry.
    const double eps = 1e-12;
    const std::string e = "distilbert.embeddings.";
    word_ = w.take(e + "word_embeddings.weight", {V, D});
    position_ = w.take(e + "position_embeddings.weight", {positions_, D});
    embed_norm_ = take_layer_norm(w, e + "LayerNorm", D, eps);
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = fmt::format("distilbert.transformer.layer.{}.", i);
      layers_.push_back(
          {take_linear(w, p + "attention.q_lin", D, D), take_linear(w, p + "attention.k_lin", D, D),
           take_linear(w, p + "attention.v_lin", D, D),
           take_linear(w, p + "attention.out_lin", D, D), take_linear(w, p + "ffn.lin1", F, D),
           take_linear(w, p + "ffn.lin2", D, F), take_layer_norm(w, p + "sa_layer_norm", D, eps),
           take_layer_norm(w, p + "output_layer_norm", D, eps)});
    }
    pre_classifier_ = take_linear(w, "pre_classifier", D, D);
    classifier_ = take_linear(w, "classifier", num_labels, D);
  }

  int64_t max_positions() const override { return positions_; }

  at::Tensor logits(const at::Tensor& ids, const at::Tensor& mask) const override {
    const at::Tensor positions = at::arange(ids.size(1), ids.options());
    at::Tensor x =
        embed_norm_(at::embedding(word_, ids) + at::embedding(position_, positions));  // (B, T, D)
    const at::Tensor mask_add = additive_attention_mask(mask);
    for (const auto& l : layers_) {
      x = l.attention_norm(l.out(self_attention(x, l.q, l.k, l.v, heads_, mask_add)) + x);
      x = l.output_norm(l.lin2(act_(l.lin1(x))) + x);
    }
    return classifier_(at::relu(pre_classifier_(x.select(1, 0))));  // (B, C)
  }

 private:
  int64_t heads_ = 1, positions_ = 0;
  Activation act_ = nullptr;
  at::Tensor word_, position_;
  LayerNorm embed_norm_;
  std::vector<DistilBertLayer> layers_;
  Linear pre_classifier_, classifier_;
};

}  // namespace

std::unique_ptr<EncoderClassifier> make_distilbert_classifier(const EncoderConfig& config,
                                                              const EncoderWeights& w,
                                                              int64_t num_labels) {
  return std::make_unique<DistilBertClassifier>(config, w, num_labels);
}

}  // namespace destein::encoders

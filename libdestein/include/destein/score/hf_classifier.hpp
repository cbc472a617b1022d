#pragma once
/// A Hugging Face encoder sequence classifier folder (BERT, RoBERTa, DistilBERT, DeBERTa-v2/v3:
/// config.json, model.safetensors and the tokenizer files) run natively as a toxicity
/// scorer, batched with padding and an attention mask, on CPU or CUDA.
///
///     destein::HfClassifierOptions o;
///     o.folder = "models/toxic-bert";   // label: default the one named toxic or toxicity
///     destein::HfClassifierScorer scorer(o);
///     auto p = scorer.probabilities({"you are nice"});  // (1, labels().size())

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "destein/score/scorer.hpp"

namespace destein {

struct HfClassifierOptions {
  std::filesystem::path folder;  ///< config.json, model.safetensors, tokenizer files
  /// The label score() reports (an `id2label` name, case-insensitive); empty: the label
  /// named "toxic" or "toxicity".
  std::string label;
  std::string device = "cpu";  ///< "cpu", "cuda", "cuda:N"
  int64_t batch_size = 32;     ///< texts per forward pass
};

/// The model types HfClassifierScorer loads: "bert", "roberta", "distilbert", "deberta-v2"
/// (DeBERTa-v2 and v3).
const std::vector<std::string>& hf_classifier_model_types();

/// Probabilities are those of Hugging Face's text-classification pipeline: sigmoid per
/// label when config.json's problem_type is multi_label_classification or there is one
/// label, else softmax over the labels. Texts longer than the model's limit
/// (tokenizer_config.json model_max_length, else the position table) are truncated, the
/// special tokens kept: BERT, DistilBERT and DeBERTa `[CLS] ... [SEP]`, RoBERTa `<s> ... </s>`.
///
/// The constructor throws std::runtime_error naming the file and the key for a missing or
/// malformed config.json, an unknown model_type, an option it does not implement
/// (problem_type regression, position_embedding_type other than absolute ...), a missing
/// tokenizer or weights file, a tensor that is missing or of the wrong shape; and
/// std::invalid_argument listing the labels when `label` names none of them.
class HfClassifierScorer : public ToxicityScorer {
 public:
  explicit HfClassifierScorer(HfClassifierOptions options);
  ~HfClassifierScorer() override;

  /// The probability of label() per text.
  std::vector<std::optional<double>> score(const std::vector<std::string>& texts) override;
  /// "hf-classifier:FOLDER:LABEL".
  std::string name() const override;

  /// Per text, the probability of every label, in labels() order.
  std::vector<std::vector<double>> probabilities(const std::vector<std::string>& texts) const;
  /// What the model reads of `text`: ids with the special tokens, truncated to max_length().
  std::vector<int64_t> input_ids(const std::string& text) const;

  /// Label names by id (config.json id2label; LABEL_i where it has none).
  const std::vector<std::string>& labels() const;
  /// The label score() reports, as labels() spells it.
  const std::string& label() const;
  const std::string& model_type() const;
  /// Tokens per text, special tokens included.
  int64_t max_length() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace destein

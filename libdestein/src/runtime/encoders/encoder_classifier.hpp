// Private: Hugging Face encoder sequence classifiers (BERT, RoBERTa, DistilBERT,
// DeBERTa-v2/v3), one file
// per family (bert.cpp, distilbert.cpp, deberta_v2.cpp) built from the pieces declared here.
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace destein::encoders {

/// The model types load_encoder_classifier() builds.
const std::vector<std::string>& encoder_model_types();

/// A classifier's forward pass: logits (B, C) float32 of input_ids (B, T) long and
/// attention_mask (B, T) long (1 = token, 0 = padding), both on the model's device.
class EncoderClassifier {
 public:
  virtual ~EncoderClassifier() = default;
  virtual at::Tensor logits(const at::Tensor& input_ids,
                            const at::Tensor& attention_mask) const = 0;
  /// The longest input, special tokens included, its position table allows.
  virtual int64_t max_positions() const = 0;
};

/// The state dict of a folder with the file it came from, handing out tensors by name with
/// their shapes checked: errors name the file and the key.
class EncoderWeights {
 public:
  EncoderWeights(std::map<std::string, at::Tensor> tensors, std::string file, c10::Device device);
  /// The tensor `name` as float32 on the device. Throws std::runtime_error naming the file
  /// and the key when it is missing or its shape is not `shape`. Old checkpoints' LayerNorm
  /// names (gamma, beta) are found for weight, bias.
  at::Tensor take(const std::string& name, at::IntArrayRef shape) const;
  bool has(const std::string& name) const;

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::string file_;
  c10::Device device_;
};

/// A config.json read with errors naming the file and the key.
class EncoderConfig {
 public:
  EncoderConfig(nlohmann::json root, std::string file);
  int64_t integer(const std::string& key) const;
  int64_t integer_or(const std::string& key, int64_t fallback) const;
  /// An integer that may be negative (DeBERTa's -1 for "not set").
  int64_t signed_integer_or(const std::string& key, int64_t fallback) const;
  double number_or(const std::string& key, double fallback) const;
  std::string string_or(const std::string& key, const std::string& fallback) const;
  bool boolean_or(const std::string& key, bool fallback) const;
  /// Throws std::runtime_error naming the file and `key` when it is present and its value
  /// is not one of `implemented` (JSON values), saying which option is refused.
  void refuse_unless(const std::string& key, const std::vector<nlohmann::json>& implemented) const;
  const nlohmann::json& root() const { return root_; }
  const std::string& file() const { return file_; }

 private:
  nlohmann::json root_;
  std::string file_;
};

/// The sizes BERT-style configs (BERT, RoBERTa, DeBERTa) name alike. Throws naming the file
/// and key for a missing one, or when num_attention_heads does not divide hidden_size.
struct EncoderShape {
  int64_t vocab = 0, hidden = 0, layers = 0, intermediate = 0, heads = 0, positions = 0;
};
EncoderShape bert_style_shape(const EncoderConfig& c);

/// y = x W^T + b for a Linear's weight (out, in) and bias (out).
struct Linear {
  at::Tensor weight, bias;
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};
Linear take_linear(const EncoderWeights& w, const std::string& prefix, int64_t out, int64_t in);

struct LayerNorm {
  at::Tensor weight, bias;
  double eps = 1e-12;
  at::Tensor operator()(const at::Tensor& x) const {
    return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  }
};
LayerNorm take_layer_norm(const EncoderWeights& w, const std::string& prefix, int64_t size,
                          double eps);

/// The hidden activation named by config key `key` ("gelu", "gelu_new", "relu" ...).
/// Throws naming the file and key for one not implemented.
using Activation = at::Tensor (*)(const at::Tensor&);
Activation activation_of(const EncoderConfig& config, const std::string& key,
                         const std::string& fallback);

/// Multi-head self-attention over x (B, T, D) with an additive mask (B, 1, 1, T) that is 0
/// for tokens and a large negative number for padding: softmax(q k^T / sqrt(Dh) + mask) v.
at::Tensor self_attention(const at::Tensor& x, const Linear& q, const Linear& k, const Linear& v,
                          int64_t heads, const at::Tensor& additive_mask);

/// The additive mask of attention_mask (B, T): (B, 1, 1, T), 0 or float32's lowest.
at::Tensor additive_attention_mask(const at::Tensor& attention_mask);

std::unique_ptr<EncoderClassifier> make_bert_classifier(const EncoderConfig& config,
                                                        const EncoderWeights& w,
                                                        int64_t num_labels);
std::unique_ptr<EncoderClassifier> make_roberta_classifier(const EncoderConfig& config,
                                                           const EncoderWeights& w,
                                                           int64_t num_labels);
std::unique_ptr<EncoderClassifier> make_deberta_v2_classifier(const EncoderConfig& config,
                                                              const EncoderWeights& w,
                                                              int64_t num_labels);
std::unique_ptr<EncoderClassifier> make_distilbert_classifier(const EncoderConfig& config,
                                                              const EncoderWeights& w,
                                                              int64_t num_labels);

/// Reads `folder`'s model.safetensors and builds the classifier of config's model_type.
/// Throws std::runtime_error naming config.json and `model_type` for an unknown type, and
/// naming the weights file and the key for a missing or misshapen tensor.
std::unique_ptr<EncoderClassifier> load_encoder_classifier(const EncoderConfig& config,
                                                           const std::filesystem::path& folder,
                                                           int64_t num_labels, c10::Device device);

}  // namespace destein::encoders

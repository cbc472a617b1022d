// What the encoder families share: config and weight access with errors that name the file
// and the key, the attention block, and the factory by model_type.

#include "runtime/encoders/encoder_classifier.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>

#include "check.hpp"
#include "io/safetensors.hpp"

namespace destein::encoders {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string>& encoder_model_types() {
  static const std::vector<std::string> types = {"bert", "roberta", "distilbert", "deberta-v2"};
  return types;
}

EncoderWeights::EncoderWeights(std::map<std::string, at::Tensor> tensors, std::string file,
                               c10::Device device)
    : tensors_(std::move(tensors)), file_(std::move(file)), device_(device) {}

bool EncoderWeights::has(const std::string& name) const { return tensors_.count(name) > 0; }

at::Tensor EncoderWeights::take(const std::string& name, at::IntArrayRef shape) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    // Checkpoints saved before transformers 2.x name LayerNorm parameters gamma and beta.
    const auto dot = name.rfind('.');
    const std::string leaf = name.substr(dot + 1), stem = name.substr(0, dot + 1);
    if (leaf == "weight") it = tensors_.find(stem + "gamma");
    if (leaf == "bias") it = tensors_.find(stem + "beta");
  }
  DESTEIN_CHECK_IO(it != tensors_.end(), "{}: no tensor '{}' (expected shape {})", file_, name,
                   c10::str(shape));
  DESTEIN_CHECK_IO(it->second.sizes() == shape,
                   "{}: '{}' has shape {}, expected {} (from config.json)", file_, name,
                   c10::str(it->second.sizes()), c10::str(shape));
  return it->second.to(device_, at::kFloat).contiguous();
}

EncoderConfig::EncoderConfig(json root, std::string file)
    : root_(std::move(root)), file_(std::move(file)) {
  DESTEIN_CHECK_IO(root_.is_object(), "{}: expected a JSON object", file_);
}

int64_t EncoderConfig::integer(const std::string& key) const {
  auto it = root_.find(key);
  DESTEIN_CHECK_IO(it != root_.end(), "{}: missing '{}' (an integer)", file_, key);
  DESTEIN_CHECK_IO(it->is_number_integer() && it->get<int64_t>() >= 0,
                   "{}: '{}' must be an integer >= 0, found {}", file_, key, it->dump());
  return it->get<int64_t>();
}

int64_t EncoderConfig::integer_or(const std::string& key, int64_t fallback) const {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) return fallback;
  return integer(key);
}

int64_t EncoderConfig::signed_integer_or(const std::string& key, int64_t fallback) const {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) return fallback;
  DESTEIN_CHECK_IO(it->is_number_integer(), "{}: '{}' must be an integer, found {}", file_, key,
                   it->dump());
  return it->get<int64_t>();
}

double EncoderConfig::number_or(const std::string& key, double fallback) const {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) return fallback;
  DESTEIN_CHECK_IO(it->is_number(), "{}: '{}' must be a number, found {}", file_, key, it->dump());
  return it->get<double>();
}

std::string EncoderConfig::string_or(const std::string& key, const std::string& fallback) const {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) return fallback;
  DESTEIN_CHECK_IO(it->is_string(), "{}: '{}' must be a string, found {}", file_, key, it->dump());
  return it->get<std::string>();
}

bool EncoderConfig::boolean_or(const std::string& key, bool fallback) const {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) return fallback;
  DESTEIN_CHECK_IO(it->is_boolean(), "{}: '{}' must be true or false, found {}", file_, key,
                   it->dump());
  return it->get<bool>();
}

void EncoderConfig::refuse_unless(const std::string& key,
                                  const std::vector<json>& implemented) const {
  auto it = root_.find(key);
  if (it == root_.end() || it->is_null()) return;
  for (const auto& ok : implemented) {
    if (*it == ok) return;
  }
  std::vector<std::string> names;
  for (const auto& ok : implemented) names.push_back(ok.dump());
  throw std::runtime_error(fmt::format("{}: '{}' {} is not implemented (implemented: {})", file_,
                                       key, it->dump(), fmt::join(names, ", ")));
}

EncoderShape bert_style_shape(const EncoderConfig& c) {
  EncoderShape s;
  s.vocab = c.integer("vocab_size");
  s.hidden = c.integer("hidden_size");
  s.layers = c.integer("num_hidden_layers");
  s.intermediate = c.integer("intermediate_size");
  s.heads = c.integer("num_attention_heads");
  DESTEIN_CHECK_IO(s.heads > 0 && s.hidden % s.heads == 0,
                   "{}: 'hidden_size' {} is not a multiple of 'num_attention_heads' {}", c.file(),
                   s.hidden, s.heads);
  s.positions = c.integer("max_position_embeddings");
  return s;
}

Linear take_linear(const EncoderWeights& w, const std::string& prefix, int64_t out, int64_t in) {
  return {w.take(prefix + ".weight", {out, in}), w.take(prefix + ".bias", {out})};
}

LayerNorm take_layer_norm(const EncoderWeights& w, const std::string& prefix, int64_t size,
                          double eps) {
  return {w.take(prefix + ".weight", {size}), w.take(prefix + ".bias", {size}), eps};
}

namespace {
at::Tensor gelu_erf(const at::Tensor& x) { return at::gelu(x); }
// gelu_new / gelu_pytorch_tanh: the tanh approximation.
at::Tensor gelu_tanh(const at::Tensor& x) {
  return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * at::pow(x, 3.0))));
}
at::Tensor relu(const at::Tensor& x) { return at::relu(x); }
}  // namespace

Activation activation_of(const EncoderConfig& config, const std::string& key,
                         const std::string& fallback) {
  const std::string name = config.string_or(key, fallback);
  if (name == "gelu") return gelu_erf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return gelu_tanh;
  if (name == "relu") return relu;
  throw std::runtime_error(fmt::format(
      "{}: '{}' \"{}\" is not implemented (implemented: gelu, gelu_new, gelu_pytorch_tanh, relu)",
      config.file(), key, name));
}

at::Tensor additive_attention_mask(const at::Tensor& attention_mask) {
  // (B, T) -> (B, 1, 1, T): what Hugging Face adds to the scores, float32's lowest for padding.
  const at::Tensor padding = attention_mask.eq(0).to(at::kFloat);
  return (padding * std::numeric_limits<float>::lowest()).unsqueeze(1).unsqueeze(2);
}

at::Tensor self_attention(const at::Tensor& x, const Linear& q, const Linear& k, const Linear& v,
                          int64_t heads, const at::Tensor& additive_mask) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), Dh = D / heads;
  auto split = [&](const at::Tensor& t) {
    return t.view({B, T, heads, Dh}).transpose(1, 2);
  };  // (B, H, T, Dh)
  const at::Tensor qh = split(q(x)), kh = split(k(x)), vh = split(v(x));
  at::Tensor scores =
      at::matmul(qh, kh.transpose(-1, -2)) / std::sqrt(static_cast<double>(Dh));  // (B, H, T, T)
  scores = scores + additive_mask;
  const at::Tensor context = at::matmul(scores.softmax(-1), vh);  // (B, H, T, Dh)
  return context.transpose(1, 2).reshape({B, T, D});
}

std::unique_ptr<EncoderClassifier> load_encoder_classifier(const EncoderConfig& config,
                                                           const fs::path& folder,
                                                           int64_t num_labels, c10::Device device) {
  const std::string type = config.string_or("model_type", "");
  const auto& types = encoder_model_types();
  DESTEIN_CHECK_IO(
      std::find(types.begin(), types.end(), type) != types.end(),
      "{}: 'model_type' \"{}\" is not an encoder classifier destein implements (implemented: {})",
      config.file(), type, fmt::join(types, ", "));
  const fs::path file = folder / "model.safetensors";
  if (!fs::exists(file)) {
    DESTEIN_CHECK_IO(
        !fs::exists(folder / "pytorch_model.bin"),
        "{}: the classifier's weights are a pytorch_model.bin; convert them to model.safetensors "
        "(safetensors.torch.save_file(torch.load(path), 'model.safetensors'))",
        folder.string());
    throw std::runtime_error(
        fmt::format("{}: no model.safetensors in the classifier folder", folder.string()));
  }
  EncoderWeights weights(read_safetensors(file).tensors, file.string(), device);
  if (type == "bert") return make_bert_classifier(config, weights, num_labels);
  if (type == "roberta") return make_roberta_classifier(config, weights, num_labels);
  if (type == "deberta-v2") return make_deberta_v2_classifier(config, weights, num_labels);
  return make_distilbert_classifier(config, weights, num_labels);
}

}  // namespace destein::encoders

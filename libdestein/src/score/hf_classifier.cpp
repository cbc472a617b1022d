#include "destein/score/hf_classifier.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <numeric>

#include "check.hpp"
#include "destein/runtime/device.hpp"
#include "destein/text/tokenizer.hpp"
#include "runtime/encoders/encoder_classifier.hpp"
#include "text/spm_library.hpp"
#include "text/wordpiece_tokenizer.hpp"

namespace destein {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& path) {
  std::ifstream in(path);
  DESTEIN_CHECK_IO(in.good(), "{}: cannot open the file", path.string());
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON ({})", path.string(), e.what()));
  }
}

// Piece -> id of a SentencePiece model, for the special tokens a text may spell: control
// pieces ([CLS], [SEP], [PAD]) never come out of SentencePiece's own encoding.
std::map<std::string, int64_t> sentencepiece_pieces(const fs::path& model_file) {
  const auto& lib = detail::spm_library();
  char err[512] = {0};
  dspm_model* model = lib.load(model_file.string().c_str(), err, sizeof(err));
  DESTEIN_CHECK_IO(model != nullptr, "{}: cannot load the SentencePiece model ({})",
                   model_file.string(), err);
  std::map<std::string, int64_t> pieces;
  char buf[1024];
  for (int id = 0; id < lib.piece_size(model); ++id) {
    if (lib.id_to_piece(model, id, buf, sizeof(buf)) == 0) pieces.emplace(buf, id);
  }
  lib.free_model(model);
  return pieces;
}

std::string lower_ascii(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const std::vector<std::string>& hf_classifier_model_types() {
  return encoders::encoder_model_types();
}

struct HfClassifierScorer::Impl {
  HfClassifierOptions options;
  std::string model_type;
  std::vector<std::string> labels;
  size_t label_index = 0;
  bool sigmoid = false;
  std::unique_ptr<Tokenizer> tokenizer;
  // Special tokens matched whole in a text before the tokenizer sees it, longest first (the
  // SentencePiece path; WordPiece and the tokenizer.json loaders match their own).
  std::vector<std::pair<std::string, int64_t>> specials;
  int64_t first_id = 0, last_id = 0, pad_id = 0;  // [CLS] [SEP] [PAD] or <s> </s> <pad>
  int64_t max_length = 0;
  c10::Device device = c10::Device(c10::kCPU);
  std::unique_ptr<encoders::EncoderClassifier> model;
};

HfClassifierScorer::HfClassifierScorer(HfClassifierOptions o) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  const fs::path& dir = o.folder;
  DESTEIN_CHECK_ARG(o.batch_size >= 1, "hf-classifier: batch_size must be >= 1, found {}",
                    o.batch_size);
  DESTEIN_CHECK_IO(fs::is_directory(dir),
                   "{}: not a folder (expected a Hugging Face classifier folder with config.json)",
                   dir.string());
  const fs::path config_path = dir / "config.json";
  DESTEIN_CHECK_IO(fs::exists(config_path), "{}: the classifier folder has no config.json",
                   dir.string());
  const encoders::EncoderConfig config(read_json(config_path), config_path.string());
  const std::string file = config.file();
  m.model_type = config.string_or("model_type", "");
  const auto& types = hf_classifier_model_types();
  DESTEIN_CHECK_IO(
      std::find(types.begin(), types.end(), m.model_type) != types.end(),
      "{}: 'model_type' \"{}\" is not an encoder classifier destein implements (implemented: {})",
      file, m.model_type, fmt::join(types, ", "));

  // Labels: id2label ("0": "toxic", ...), else num_labels LABEL_i names, as transformers.
  const json& root = config.root();
  if (root.contains("id2label") && root["id2label"].is_object() && !root["id2label"].empty()) {
    m.labels.resize(root["id2label"].size());
    for (const auto& [key, name] : root["id2label"].items()) {
      size_t id = m.labels.size();
      try {
        id = std::stoul(key);
      } catch (const std::exception&) {
      }
      DESTEIN_CHECK_IO(id < m.labels.size() && name.is_string() && m.labels[id].empty(),
                       "{}: 'id2label' must map the ids 0..{} to names, found \"{}\": {}", file,
                       m.labels.size() - 1, key, name.dump());
      m.labels[id] = name.get<std::string>();
    }
  } else {
    const int64_t n = config.integer_or("num_labels", 2);
    for (int64_t i = 0; i < n; ++i) m.labels.push_back(fmt::format("LABEL_{}", i));
  }
  config.refuse_unless("problem_type",
                       {"single_label_classification", "multi_label_classification"});
  const std::string problem = config.string_or("problem_type", "");
  m.sigmoid = problem == "multi_label_classification" || (problem.empty() && m.labels.size() == 1);

  const std::string wanted = lower_ascii(o.label);
  auto named = [&](const std::string& name) {
    return std::find_if(m.labels.begin(), m.labels.end(),
                        [&](const std::string& l) { return lower_ascii(l) == name; });
  };
  auto it = wanted.empty() ? named("toxic") : named(wanted);
  if (wanted.empty() && it == m.labels.end()) it = named("toxicity");
  if (it == m.labels.end()) {
    throw std::invalid_argument(fmt::format(
        "{}: {} in 'id2label'; the labels are: {}", file,
        wanted.empty()
            ? std::string(
                  "no label named toxic or toxicity (choose one with --label / scorer.label)")
            : fmt::format("no label \"{}\"", o.label),
        fmt::join(m.labels, ", ")));
  }
  m.label_index = static_cast<size_t>(it - m.labels.begin());

  // The tokenizer, and the special tokens this family puts around a text.
  json tokenizer_config = json::object();
  if (fs::exists(dir / "tokenizer_config.json"))
    tokenizer_config = read_json(dir / "tokenizer_config.json");
  if (m.model_type == "deberta-v2") {
    const fs::path spm = dir / "spm.model";
    DESTEIN_CHECK_IO(
        fs::exists(spm),
        "{}: no spm.model in the classifier folder (DeBERTa-v2/v3's SentencePiece model)",
        dir.string());
    m.tokenizer = load_sentencepiece_tokenizer(spm, /*prepend_bos=*/false);
    const auto pieces = sentencepiece_pieces(spm);
    auto special = [&](const char* key, const char* fallback,
                       bool required) -> std::optional<int64_t> {
      std::string token = fallback;
      auto t = tokenizer_config.find(key);
      if (t != tokenizer_config.end() && t->is_string()) token = t->get<std::string>();
      if (t != tokenizer_config.end() && t->is_object() && t->contains("content")) {
        token = (*t)["content"].get<std::string>();
      }
      auto it = pieces.find(token);
      DESTEIN_CHECK_IO(it != pieces.end() || !required, "{}: spm.model has no {} piece \"{}\"",
                       dir.string(), key, token);
      if (it == pieces.end()) return std::nullopt;
      m.specials.emplace_back(token, it->second);
      return it->second;
    };
    m.first_id = *special("cls_token", "[CLS]", true);
    m.last_id = *special("sep_token", "[SEP]", true);
    special("pad_token", "[PAD]", false);
    special("unk_token", "[UNK]", false);
    special("mask_token", "[MASK]", false);
    std::sort(m.specials.begin(), m.specials.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    m.pad_id = config.integer_or("pad_token_id", 0);
  } else if (m.model_type == "roberta") {
    m.tokenizer = load_tokenizer(dir);
    m.first_id = config.integer_or("bos_token_id", 0);
    m.last_id = config.integer_or("eos_token_id", 2);
    m.pad_id = config.integer_or("pad_token_id", 1);
  } else {
    auto wordpiece = load_wordpiece_tokenizer(dir);
    auto special = [&](const char* key, const char* fallback) {
      std::string token = fallback;
      auto t = tokenizer_config.find(key);
      if (t != tokenizer_config.end() && t->is_string()) token = t->get<std::string>();
      if (t != tokenizer_config.end() && t->is_object() && t->contains("content"))
        token = (*t)["content"].get<std::string>();
      auto id = wordpiece->token_id(token);
      DESTEIN_CHECK_IO(id.has_value(), "{}: the tokenizer has no {} token \"{}\"", dir.string(),
                       key, token);
      return *id;
    };
    m.first_id = special("cls_token", "[CLS]");
    m.last_id = special("sep_token", "[SEP]");
    m.pad_id = config.integer_or("pad_token_id", 0);
    m.tokenizer = std::move(wordpiece);
  }

  m.device = parse_device(o.device);
  m.model = encoders::load_encoder_classifier(config, dir, static_cast<int64_t>(m.labels.size()),
                                              m.device);
  m.max_length = m.model->max_positions();
  // model_max_length is the tokenizer's limit; transformers writes a huge number when unset.
  const auto limit = tokenizer_config.find("model_max_length");
  if (limit != tokenizer_config.end() && limit->is_number() && limit->get<double>() < 1e9) {
    m.max_length = std::min<int64_t>(m.max_length, limit->get<int64_t>());
  }
  DESTEIN_CHECK_IO(m.max_length >= 2,
                   "{}: the model takes {} tokens, fewer than its two special tokens", file,
                   m.max_length);
  m.options = std::move(o);
}

HfClassifierScorer::~HfClassifierScorer() = default;

const std::vector<std::string>& HfClassifierScorer::labels() const { return impl_->labels; }
const std::string& HfClassifierScorer::label() const { return impl_->labels[impl_->label_index]; }
const std::string& HfClassifierScorer::model_type() const { return impl_->model_type; }
int64_t HfClassifierScorer::max_length() const { return impl_->max_length; }

std::string HfClassifierScorer::name() const {
  return fmt::format("hf-classifier:{}:{}", impl_->options.folder.string(), label());
}

std::vector<int64_t> HfClassifierScorer::input_ids(const std::string& text) const {
  std::vector<int64_t> body;
  const auto& specials = impl_->specials;
  size_t segment = 0;
  for (size_t i = 0; i < text.size() && !specials.empty();) {
    auto match = std::find_if(specials.begin(), specials.end(), [&](const auto& s) {
      return text.compare(i, s.first.size(), s.first) == 0;
    });
    if (match == specials.end()) {
      ++i;
      continue;
    }
    const auto ids = impl_->tokenizer->encode(std::string_view(text).substr(segment, i - segment));
    body.insert(body.end(), ids.begin(), ids.end());
    body.push_back(match->second);
    i += match->first.size();
    segment = i;
  }
  const auto rest = impl_->tokenizer->encode(std::string_view(text).substr(segment));
  body.insert(body.end(), rest.begin(), rest.end());
  // Hugging Face truncates the text's tokens so that the special tokens still fit.
  const size_t room = static_cast<size_t>(impl_->max_length - 2);
  if (body.size() > room) body.resize(room);
  std::vector<int64_t> ids;
  ids.reserve(body.size() + 2);
  ids.push_back(impl_->first_id);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(impl_->last_id);
  return ids;
}

std::vector<std::vector<double>> HfClassifierScorer::probabilities(
    const std::vector<std::string>& texts) const {
  const auto& m = *impl_;
  std::vector<std::vector<int64_t>> rows;
  rows.reserve(texts.size());
  for (const auto& t : texts) rows.push_back(input_ids(t));
  // Longest first, so that a batch holds texts of similar length and pads little.
  std::vector<size_t> order(texts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return rows[a].size() > rows[b].size(); });

  std::vector<std::vector<double>> out(texts.size());
  c10::InferenceMode guard;
  const size_t batch = static_cast<size_t>(m.options.batch_size);
  for (size_t start = 0; start < order.size(); start += batch) {
    const size_t end = std::min(order.size(), start + batch);
    const int64_t B = static_cast<int64_t>(end - start),
                  T = static_cast<int64_t>(rows[order[start]].size());
    at::Tensor ids = at::full({B, T}, m.pad_id, at::kLong),
               mask = at::zeros({B, T}, at::kLong);  // (B, T)
    for (int64_t b = 0; b < B; ++b) {
      const auto& r = rows[order[start + static_cast<size_t>(b)]];
      const int64_t n = static_cast<int64_t>(r.size());
      ids[b].narrow(0, 0, n).copy_(at::tensor(r, at::kLong));
      mask[b].narrow(0, 0, n).fill_(1);
    }
    at::Tensor logits = m.model->logits(ids.to(m.device), mask.to(m.device));  // (B, C)
    at::Tensor probs =
        (m.sigmoid ? logits.sigmoid() : logits.softmax(-1)).to(at::kCPU, at::kDouble).contiguous();
    const double* p = probs.data_ptr<double>();
    const size_t C = m.labels.size();
    for (int64_t b = 0; b < B; ++b) {
      out[order[start + static_cast<size_t>(b)]].assign(p + b * C, p + (b + 1) * C);
    }
  }
  return out;
}

std::vector<std::optional<double>> HfClassifierScorer::score(
    const std::vector<std::string>& texts) {
  std::vector<std::optional<double>> out;
  out.reserve(texts.size());
  for (const auto& row : probabilities(texts)) {
    const double p = row[impl_->label_index];
    out.push_back(std::isfinite(p) ? std::optional<double>(p) : std::nullopt);
  }
  return out;
}

}  // namespace destein

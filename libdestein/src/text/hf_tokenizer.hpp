#pragma once
/// Hugging Face `tokenizer.json` pipelines, exact to the Hugging Face tokenizers library.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "destein/text/tokenizer.hpp"

namespace destein {

/// A tokenizer.json pipeline: added and special tokens, normalizer, pre-tokenizer, BPE
/// model, post-processor and decoder, giving the ids and text the Hugging Face library
/// gives. docs/tokenizers.md lists the components and options it implements; a file using
/// any other is refused at load time, naming the component and the option.
class HfTokenizer : public Tokenizer {
 public:
  /// Hugging Face `encode(text, add_special_tokens=False)`: added and special tokens
  /// spelled in `text` are matched (never split), nothing is added around the text.
  std::vector<int64_t> encode(std::string_view text) const override = 0;

  /// Hugging Face `encode(text, add_special_tokens=True)`: encode() with what the
  /// post-processor adds (BOS, EOS).
  virtual std::vector<int64_t> encode_with_special_tokens(std::string_view text) const = 0;

  /// Hugging Face `decode(ids, skip_special_tokens)`. Throws std::invalid_argument naming
  /// an id that no token has.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const = 0;

  /// decode(ids, true): special tokens are left out, as the Tokenizer interface says.
  std::string decode(const std::vector<int64_t>& ids) const override { return decode(ids, true); }

  /// The id of the token `content` (model vocabulary or added token), if there is one.
  virtual std::optional<int64_t> token_id(std::string_view content) const = 0;
};

/// Loads a Hugging Face `tokenizer.json`. bos_id() is the special token the
/// post-processor puts first (prepend_bos() is then true), eos_id() the `eos_token` of a
/// `tokenizer_config.json` beside the file, else the special token the post-processor puts
/// last. Throws std::runtime_error naming the file, the JSON key and what was expected on a
/// malformed file, and naming the component and option on one it does not implement.
std::unique_ptr<HfTokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);

}  // namespace destein

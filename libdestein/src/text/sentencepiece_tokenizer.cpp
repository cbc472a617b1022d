// SentencePiece models (LLaMA's tokenizer.model and friends) through libsentencepiece, so
// that normalisation, byte fallback and the unigram/BPE search are the reference's own.
// libsentencepiece is reached through the libdestein_spm shim (see spm_shim_api.h).

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "check.hpp"
#include "destein/text/tokenizer.hpp"
#include "text/spm_library.hpp"

namespace destein {
namespace {

namespace fs = std::filesystem;
using detail::spm_library;

// SentencePieceProcessor's const methods (Encode, Decode, queries) are safe to call from
// several threads once the model is loaded.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(dspm_model* model, bool prepend_bos)
      : model_(model, spm_library().free_model) {
    const auto& lib = spm_library();
    vocab_size_ = lib.piece_size(model);
    // The library reports an absent piece as -1.
    if (lib.bos_id(model) >= 0) bos_ = lib.bos_id(model);
    if (lib.eos_id(model) >= 0) eos_ = lib.eos_id(model);
    control_.resize(static_cast<size_t>(vocab_size_));
    for (int i = 0; i < vocab_size_; ++i) control_[i] = lib.is_control(model, i) != 0;
    // A model without BOS cannot start prompts with it, whatever the caller asked.
    prepend_bos_ = prepend_bos && bos_.has_value();
  }

  std::vector<int64_t> encode(std::string_view text) const override {
    const auto& lib = spm_library();
    int32_t* ids = nullptr;
    size_t n = 0;
    char err[512];
    DESTEIN_CHECK_IO(
        lib.encode(model_.get(), text.data(), text.size(), &ids, &n, err, sizeof(err)) == 0,
        "SentencePiece encode failed: {}", err);
    std::vector<int64_t> out(ids, ids + n);
    lib.free_buffer(ids);
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int32_t> kept;
    kept.reserve(ids.size());
    for (int64_t id : ids) {
      DESTEIN_CHECK_ARG(id >= 0 && id < vocab_size(),
                        "token id {} is out of range: the SentencePiece vocabulary has {} ids "
                        "(0..{})",
                        id, vocab_size(), vocab_size() - 1);
      // Control pieces (<s>, </s>, padding) carry no text.
      if (!control_[static_cast<size_t>(id)]) kept.push_back(static_cast<int32_t>(id));
    }
    const auto& lib = spm_library();
    char* text = nullptr;
    size_t len = 0;
    char err[512];
    DESTEIN_CHECK_IO(
        lib.decode(model_.get(), kept.data(), kept.size(), &text, &len, err, sizeof(err)) == 0,
        "SentencePiece decode failed: {}", err);
    std::string out(text, len);
    lib.free_buffer(text);
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int64_t> bos_id() const override { return bos_; }
  std::optional<int64_t> eos_id() const override { return eos_; }
  bool prepend_bos() const override { return prepend_bos_; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::unique_ptr<dspm_model, void (*)(dspm_model*)> model_;
  int64_t vocab_size_ = 0;
  std::vector<bool> control_;
  std::optional<int64_t> bos_;
  std::optional<int64_t> eos_;
  bool prepend_bos_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const fs::path& model_file,
                                                        bool prepend_bos) {
  std::error_code ec;
  DESTEIN_CHECK_IO(fs::is_regular_file(model_file, ec),
                   "SentencePiece model '{}' does not exist or is not a file", model_file.string());
  char err[512] = {0};
  dspm_model* model = spm_library().load(model_file.string().c_str(), err, sizeof(err));
  DESTEIN_CHECK_IO(model != nullptr, "cannot load SentencePiece model '{}': {}",
                   model_file.string(), err);
  return std::make_unique<SentencePieceTokenizer>(model, prepend_bos);
}

void train_sentencepiece(const std::string& trainer_args) {
  char err[1024] = {0};
  DESTEIN_CHECK_IO(spm_library().train(trainer_args.c_str(), err, sizeof(err)) == 0,
                   "SentencePiece training failed: {}", err);
}

}  // namespace destein

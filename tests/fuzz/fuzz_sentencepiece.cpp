// SentencePiece encoding of arbitrary bytes through destein's module (dlopen'ed): no
// crash, ids in range. The model is trained by scripts/fuzz.sh with spm_train.
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "destein/text/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<destein::Tokenizer> tok = [] {
    const char* model = std::getenv("DESTEIN_FUZZ_SPM_MODEL");
    if (!model) __builtin_trap();
    return destein::load_sentencepiece_tokenizer(model, true);
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto ids = tok->encode(text);
    for (int64_t id : ids) {
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
    }
    (void)tok->decode(ids);
  } catch (const std::exception&) {
    // invalid UTF-8 may be refused with an exception; anything else is a finding
  }
  return 0;
}

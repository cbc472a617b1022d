// GPT-2 byte-level BPE on arbitrary bytes (invalid UTF-8 included): encode must not crash
// and give ids in range; for well-formed UTF-8, decoding the ids gives the input back byte
// for byte (ill-formed subparts are replaced by U+FFFD before encoding, as documented in
// docs/tokenizers.md, so they do not round-trip).
#include <cstdlib>
#include <memory>
#include <string>

#include "destein/text/tokenizer.hpp"

namespace {

// Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else
      return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<destein::Tokenizer> tok = [] {
    const char* dir = std::getenv("DESTEIN_FUZZ_GPT2_DIR");  // encoder.json + vocab.bpe
    if (!dir) __builtin_trap();
    return destein::load_gpt2_tokenizer(std::string(dir) + "/encoder.json",
                                        std::string(dir) + "/vocab.bpe");
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto ids = tok->encode(text);
  for (int64_t id : ids) {
    if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
  }
  if (valid_utf8(data, size) && tok->decode(ids) != text) __builtin_trap();
  return 0;
}

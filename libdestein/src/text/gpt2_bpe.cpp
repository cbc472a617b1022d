// GPT-2 byte-level BPE, exact to openai/gpt-2 `encoder.py` (and the npm `gpt-3-encoder`
// port our tests take as the golden reference).
//
// Encoding works on ids, not strings: every pre-token is mapped byte by byte to the ids of
// the 256 single-character tokens, and a merge is a lookup of the pair (left id, right id)
// giving (rank, merged id). The original merges strings, but token strings and ids are a
// bijection, so the result is the same and the hot loop allocates nothing.

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "check.hpp"
#include "destein/text/tokenizer.hpp"
#include "text/text_util.hpp"

namespace destein {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::string_view kEndOfText = "<|endoftext|>";

// encoder.py's pattern. Only lower-case contractions are split off: the original says it
// should have used re.IGNORECASE, but the released models were trained without it.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The per-word cache is cleared when it reaches this size so that a long run over
// millions of distinct words cannot grow memory without bound.
constexpr size_t kMaxCacheEntries = size_t{1} << 18;

using text_detail::append_utf8;
using text_detail::code_points;
using text_detail::is_valid_utf8;
using text_detail::parse_json_file;
using text_detail::read_file;
using text_detail::replace_invalid_utf8;

// ---------------------------------------------------------------------------------------
// bytes_to_unicode() of encoder.py: printable bytes stand for themselves, the others are
// shifted to U+0100.. so that no token string holds whitespace or control characters.

struct ByteMap {
  std::array<char32_t, 256> byte_to_char{};
  std::unordered_map<char32_t, unsigned char> char_to_byte;
};

const ByteMap& byte_map() {
  static const ByteMap map = [] {
    ByteMap m;
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      m.byte_to_char[b] = printable[b] ? static_cast<char32_t>(b) : next++;
      m.char_to_byte[m.byte_to_char[b]] = static_cast<unsigned char>(b);
    }
    return m;
  }();
  return map;
}

// The bytes a token string stands for. A token with characters outside the byte map (an
// added token such as "<|endoftext|>" is inside it, but a hand-made one may not be) is
// kept as its own UTF-8, as the Hugging Face ByteLevel decoder does.
std::string token_bytes(std::string_view token) {
  const ByteMap& map = byte_map();
  std::string bytes;
  for (char32_t cp : code_points(token)) {
    const auto it = map.char_to_byte.find(cp);
    if (it == map.char_to_byte.end()) return std::string(token);
    bytes += static_cast<char>(it->second);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------
// The compiled pattern, shared by all tokenizers; pcre2_code is read-only while matching.

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct Pcre2MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

struct Gpt2Pattern {
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> code;
  bool jit = false;
};

const Gpt2Pattern& gpt2_pattern() {
  static const Gpt2Pattern pattern = [] {
    Gpt2Pattern p;
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    // UCP makes \s and the classes Unicode-aware, as in Python's `regex` and JS /u.
    p.code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr));
    if (!p.code) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      throw std::runtime_error(fmt::format(
          "GPT-2 pre-tokenisation pattern does not compile with this PCRE2 at offset {}: {}",
          error_offset, reinterpret_cast<const char*>(message.data())));
    }
    // Without JIT (a PCRE2 built without it) matching is slower but identical.
    p.jit = pcre2_jit_compile(p.code.get(), PCRE2_JIT_COMPLETE) == 0;
    return p;
  }();
  return pattern;
}

pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, Pcre2MatchDataDeleter> data(
      pcre2_match_data_create(1, nullptr));
  return data.get();
}

// ---------------------------------------------------------------------------------------
// The tokenizer

struct Merge {
  int32_t rank;
  int32_t id;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Unicode NFC (the normalizer of GPT-NeoX's tokenizer.json, MPT's tokenizer), by ICU.
// ASCII text is always in NFC and skips the conversion.
std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return std::string(text);
  }
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(err);
  DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: cannot load the NFC normalizer ({})", u_errorName(err));
  const icu::UnicodeString u = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  const icu::UnicodeString normalized = normalizer->normalize(u, err);
  DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: NFC normalisation failed ({})", u_errorName(err));
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

// What the two loaders hand over: token strings by id, merges as token-string pairs.
struct BpeSpec {
  std::vector<std::pair<std::string, int64_t>> vocab;  // token string (byte-mapped), id
  struct AddedToken {
    std::string content;  // raw text, not byte-mapped
    int64_t id;
    bool special;  // special tokens never come from text; the others are matched in it
  };
  std::vector<AddedToken> added;
  struct MergeSpec {
    std::string left, right;
    std::string where;  // "file:line" or "file: model.merges[i]" for error messages
  };
  std::vector<MergeSpec> merges;
  std::string source;  // file named in load errors
  bool add_prefix_space = false;
  bool nfc = false;  // normalizer NFC (GPT-NeoX)
};

class Gpt2BpeTokenizer final : public Tokenizer {
 public:
  explicit Gpt2BpeTokenizer(const BpeSpec& spec)
      : add_prefix_space_(spec.add_prefix_space), nfc_(spec.nfc) {
    gpt2_pattern();  // compile errors surface at load time, not at the first encode

    int64_t max_id = -1;
    for (const auto& [token, id] : spec.vocab) max_id = std::max(max_id, id);
    for (const auto& added : spec.added) max_id = std::max(max_id, added.id);
    DESTEIN_CHECK_IO(max_id >= 0, "{}: the vocabulary is empty", spec.source);
    DESTEIN_CHECK_IO(max_id < INT32_MAX, "{}: token id {} is too large", spec.source, max_id);
    id_to_bytes_.resize(max_id + 1);
    is_special_.assign(max_id + 1, false);

    std::unordered_map<std::string, int32_t> token_to_id;
    token_to_id.reserve(spec.vocab.size());
    std::vector<const std::string*> id_to_token(max_id + 1, nullptr);
    for (const auto& [token, id] : spec.vocab) {
      DESTEIN_CHECK_IO(id >= 0, "{}: token '{}' has negative id {}", spec.source, token, id);
      DESTEIN_CHECK_IO(id_to_token[id] == nullptr || *id_to_token[id] == token,
                       "{}: tokens '{}' and '{}' share id {}; ids must be unique", spec.source,
                       *id_to_token[id], token, id);
      id_to_token[id] = &token;
      token_to_id[token] = static_cast<int32_t>(id);
      id_to_bytes_[id] = token_bytes(token);
    }
    for (const auto& added : spec.added) {
      DESTEIN_CHECK_IO(added.id >= 0, "{}: added token '{}' has negative id {}", spec.source,
                       added.content, added.id);
      id_to_bytes_[added.id] = added.content;
      is_special_[added.id] = added.special;
      if (!added.special && !added.content.empty()) {
        text_tokens_.emplace_back(added.content, static_cast<int32_t>(added.id));
      }
    }

    const ByteMap& map = byte_map();
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      append_utf8(ch, map.byte_to_char[b]);
      const auto it = token_to_id.find(ch);
      DESTEIN_CHECK_IO(it != token_to_id.end(),
                       "{}: the vocabulary has no token '{}' for byte 0x{:02X}; a byte-level BPE "
                       "vocabulary needs all 256",
                       spec.source, ch, b);
      byte_ids_[b] = it->second;
    }

    merges_.reserve(spec.merges.size() * 2);
    int32_t rank = 0;
    for (const auto& merge : spec.merges) {
      const auto left = token_to_id.find(merge.left);
      const auto right = token_to_id.find(merge.right);
      const auto merged = token_to_id.find(merge.left + merge.right);
      DESTEIN_CHECK_IO(left != token_to_id.end(),
                       "{}: merge '{} {}' uses '{}', not in the vocabulary", merge.where,
                       merge.left, merge.right, merge.left);
      DESTEIN_CHECK_IO(right != token_to_id.end(),
                       "{}: merge '{} {}' uses '{}', not in the vocabulary", merge.where,
                       merge.left, merge.right, merge.right);
      DESTEIN_CHECK_IO(merged != token_to_id.end(),
                       "{}: merge '{} {}' makes '{}', not in the vocabulary", merge.where,
                       merge.left, merge.right, merge.left + merge.right);
      // A repeated pair takes its last rank, as dict(zip(merges, range(n))) in the
      // original (and the JS and Hugging Face ports) do.
      merges_.insert_or_assign(pair_key(left->second, right->second), Merge{rank, merged->second});
      ++rank;
    }

    const auto eot = token_to_id.find(std::string(kEndOfText));
    if (eot != token_to_id.end()) {
      end_of_text_ = eot->second;
      is_special_[eot->second] = true;
    }
    for (const auto& added : spec.added) {
      if (added.content == kEndOfText) {
        end_of_text_ = added.id;
        is_special_[added.id] = true;
      }
    }
  }

  std::vector<int64_t> encode(std::string_view text) const override {
    std::string repaired;
    if (!is_valid_utf8(text)) {
      repaired = replace_invalid_utf8(text);
      text = repaired;
    }
    std::string normalized;
    if (nfc_) {
      normalized = nfc(text);
      text = normalized;
    }
    if (text_tokens_.empty()) return encode_segment(text);
    // As Hugging Face's added vocabulary: non-special added tokens are cut out of the text
    // first (leftmost, then longest match); the pieces between are pre-tokenised apart.
    std::vector<int64_t> ids;
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      size_t best_len = 0;
      int32_t best_id = -1;
      for (const auto& [content, id] : text_tokens_) {
        if (content.size() > best_len && text.compare(i, content.size(), content) == 0) {
          best_len = content.size();
          best_id = id;
        }
      }
      if (best_len == 0) {
        ++i;
        continue;
      }
      if (i > start) {
        const auto piece = encode_segment(text.substr(start, i - start));
        ids.insert(ids.end(), piece.begin(), piece.end());
      }
      ids.push_back(best_id);
      i += best_len;
      start = i;
    }
    if (start < text.size()) {
      const auto piece = encode_segment(text.substr(start));
      ids.insert(ids.end(), piece.begin(), piece.end());
    }
    return ids;
  }

  std::vector<int64_t> encode_segment(std::string_view text) const {
    std::string prefixed;
    if (add_prefix_space_ && !text.empty() && text.front() != ' ') {
      prefixed = " " + std::string(text);
      text = prefixed;
    }

    const Gpt2Pattern& pattern = gpt2_pattern();
    pcre2_match_data* match = thread_match_data();
    std::vector<int64_t> ids;
    ids.reserve(text.size() / 3 + 1);
    std::vector<int32_t> word;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    for (size_t offset = 0; offset < text.size();) {
      // The subject was checked above; without NO_UTF_CHECK PCRE2 would re-validate the
      // whole text at every call, quadratic in its length.
      int rc = pcre2_match(pattern.code.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK,
                           match, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(pattern.code.get(), subject, text.size(), offset,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match, nullptr);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;  // cannot happen: the classes cover every character
      DESTEIN_CHECK_IO(rc >= 0, "GPT-2 pre-tokenisation failed at byte {} (PCRE2 error {})", offset,
                       rc);
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match);
      if (span[1] <= offset) break;  // an empty match would loop; the pattern has none
      append_word(text.substr(span[0], span[1] - span[0]), word, ids);
      offset = span[1];
    }
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    for (int64_t id : ids) {
      DESTEIN_CHECK_ARG(id >= 0 && id < vocab_size(),
                        "token id {} is out of range: the GPT-2 BPE vocabulary has {} ids "
                        "(0..{})",
                        id, vocab_size(), vocab_size() - 1);
      if (!is_special_[id]) text += id_to_bytes_[id];
    }
    return text;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_bytes_.size()); }
  std::optional<int64_t> bos_id() const override { return end_of_text_; }
  std::optional<int64_t> eos_id() const override { return end_of_text_; }
  bool prepend_bos() const override { return false; }
  std::string kind() const override { return "gpt2-bpe"; }

 private:
  void append_word(std::string_view bytes, std::vector<int32_t>& word,
                   std::vector<int64_t>& ids) const {
    if (bytes.size() == 1) {
      ids.push_back(byte_ids_[static_cast<unsigned char>(bytes[0])]);
      return;
    }
    // Short keys stay in the string's small buffer, so a cache hit allocates nothing.
    const std::string key(bytes);
    {
      std::shared_lock lock(cache_mutex_);
      const auto it = cache_.find(key);
      if (it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    word.clear();
    for (char c : bytes) word.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    bpe(word);
    ids.insert(ids.end(), word.begin(), word.end());
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(key, word);
  }

  // encoder.py's bpe(): repeatedly take the adjacent pair of lowest rank and merge every
  // occurrence of it, left to right, until no adjacent pair has a rank.
  void bpe(std::vector<int32_t>& word) const {
    while (word.size() > 1) {
      int32_t best_rank = INT32_MAX;
      int32_t left = 0, right = 0, merged = 0;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const auto it = merges_.find(pair_key(word[i], word[i + 1]));
        if (it != merges_.end() && it->second.rank < best_rank) {
          best_rank = it->second.rank;
          left = word[i];
          right = word[i + 1];
          merged = it->second.id;
        }
      }
      if (best_rank == INT32_MAX) break;
      size_t out = 0;
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
          word[out++] = merged;
          i += 2;
        } else {
          word[out++] = word[i++];
        }
      }
      word.resize(out);
    }
  }

  std::array<int32_t, 256> byte_ids_{};
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<std::string> id_to_bytes_;  // raw bytes, indexed by id
  std::vector<bool> is_special_;
  std::optional<int64_t> end_of_text_;
  bool add_prefix_space_ = false;
  bool nfc_ = false;
  std::vector<std::pair<std::string, int32_t>> text_tokens_;  // non-special added tokens

  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Splits "left right" (vocab.bpe / merges.txt, or a tokenizer.json merge string) on runs
// of spaces and tabs, as the original's str.split() does for these ASCII-only separators.
bool split_merge(std::string_view line, std::string& left, std::string& right) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) parts.push_back(line.substr(start, i - start));
  }
  if (parts.size() != 2) return false;
  left = std::string(parts[0]);
  right = std::string(parts[1]);
  return true;
}

}  // namespace

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const fs::path& vocab_json,
                                               const fs::path& merges_txt) {
  BpeSpec spec;
  spec.source = vocab_json.string();
  const json vocab = parse_json_file(vocab_json, "GPT-2 vocabulary");
  DESTEIN_CHECK_IO(vocab.is_object(),
                   "GPT-2 vocabulary '{}' must be a JSON object mapping token to id, found a {}",
                   vocab_json.string(), vocab.type_name());
  spec.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    DESTEIN_CHECK_IO(id.is_number_integer(),
                     "GPT-2 vocabulary '{}': token '{}' has a {} as id, expected an integer",
                     vocab_json.string(), token, id.type_name());
    spec.vocab.emplace_back(token, id.get<int64_t>());
  }

  const std::string merges = read_file(merges_txt, "GPT-2 merges file");
  std::string_view rest = merges;
  for (size_t line_no = 1; !rest.empty(); ++line_no) {
    const size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    BpeSpec::MergeSpec merge;
    merge.where = fmt::format("{}:{}", merges_txt.string(), line_no);
    DESTEIN_CHECK_IO(split_merge(line, merge.left, merge.right),
                     "{}: malformed merge '{}', expected two tokens separated by a space",
                     merge.where, line);
    spec.merges.push_back(std::move(merge));
  }
  return std::make_unique<Gpt2BpeTokenizer>(spec);
}

std::unique_ptr<Tokenizer> load_gpt2_tokenizer_json(const fs::path& tokenizer_json) {
  const std::string file = tokenizer_json.string();
  const json root = parse_json_file(tokenizer_json, "tokenizer file");
  DESTEIN_CHECK_IO(root.is_object() && root.contains("model") && root["model"].is_object(),
                   "tokenizer file '{}' has no \"model\" object; is it a Hugging Face "
                   "tokenizer.json?",
                   file);
  const json& model = root["model"];
  const std::string type = model.value("type", std::string("BPE"));
  DESTEIN_CHECK_IO(type == "BPE",
                   "tokenizer file '{}': model.type is \"{}\", only \"BPE\" (GPT-2 byte-level) "
                   "is supported; for a SentencePiece model load its tokenizer.model",
                   file, type);

  // Only the GPT-2 pipeline is implemented; anything else would encode silently wrong.
  const auto pre = root.find("pre_tokenizer");
  DESTEIN_CHECK_IO(pre != root.end() && pre->is_object() && pre->value("type", "") == "ByteLevel" &&
                       pre->value("use_regex", true),
                   "tokenizer file '{}': pre_tokenizer must be ByteLevel with the GPT-2 regex, "
                   "found {}; only GPT-2 byte-level BPE is supported",
                   file, pre == root.end() ? std::string("none") : pre->dump());
  const auto normalizer = root.find("normalizer");
  const bool nfc =
      normalizer != root.end() && normalizer->is_object() && normalizer->value("type", "") == "NFC";
  DESTEIN_CHECK_IO(normalizer == root.end() || normalizer->is_null() || nfc,
                   "tokenizer file '{}': normalizer {} is not supported (GPT-2 has none, "
                   "GPT-NeoX NFC)",
                   file, normalizer == root.end() ? std::string() : normalizer->dump());
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model.find(key);
    DESTEIN_CHECK_IO(it == model.end() || it->is_null() || (it->is_string() && it->empty()),
                     "tokenizer file '{}': model.{} is not supported (GPT-2 has none)", file, key);
  }
  DESTEIN_CHECK_IO(!model.value("ignore_merges", false),
                   "tokenizer file '{}': model.ignore_merges is not supported (GPT-2 has it off)",
                   file);

  BpeSpec spec;
  spec.source = file;
  spec.add_prefix_space = pre->value("add_prefix_space", false);
  spec.nfc = nfc;
  const auto vocab = model.find("vocab");
  DESTEIN_CHECK_IO(vocab != model.end() && vocab->is_object(),
                   "tokenizer file '{}': model.vocab must be an object mapping token to id", file);
  spec.vocab.reserve(vocab->size());
  for (const auto& [token, id] : vocab->items()) {
    DESTEIN_CHECK_IO(id.is_number_integer(),
                     "tokenizer file '{}': model.vocab[\"{}\"] is a {}, expected an integer id",
                     file, token, id.type_name());
    spec.vocab.emplace_back(token, id.get<int64_t>());
  }

  const auto merges = model.find("merges");
  DESTEIN_CHECK_IO(merges != model.end() && merges->is_array(),
                   "tokenizer file '{}': model.merges must be an array", file);
  spec.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& entry = (*merges)[i];
    BpeSpec::MergeSpec merge;
    merge.where = fmt::format("{}: model.merges[{}]", file, i);
    bool ok = false;
    if (entry.is_string()) {
      ok = split_merge(entry.get<std::string>(), merge.left, merge.right);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      merge.left = entry[0].get<std::string>();
      merge.right = entry[1].get<std::string>();
      ok = true;
    }
    DESTEIN_CHECK_IO(ok, "{}: malformed merge {}, expected \"left right\" or [\"left\", \"right\"]",
                     merge.where, entry.dump());
    spec.merges.push_back(std::move(merge));
  }

  const auto added = root.find("added_tokens");
  if (added != root.end() && added->is_array()) {
    for (size_t i = 0; i < added->size(); ++i) {
      const json& token = (*added)[i];
      DESTEIN_CHECK_IO(token.is_object() && token.contains("id") &&
                           token["id"].is_number_integer() && token.contains("content") &&
                           token["content"].is_string(),
                       "tokenizer file '{}': added_tokens[{}] needs an integer \"id\" and a "
                       "string \"content\", found {}",
                       file, i, token.dump());
      const bool special = token.value("special", false);
      if (!special) {
        // Matched in text: only the plain kind (GPT-NeoX's runs of spaces) is implemented.
        for (const char* flag : {"single_word", "lstrip", "rstrip"}) {
          DESTEIN_CHECK_IO(!token.value(flag, false),
                           "tokenizer file '{}': added_tokens[{}] (\"{}\") has {} = true, "
                           "which is not supported",
                           file, i, token["content"].get<std::string>(), flag);
        }
      }
      spec.added.push_back(
          {token["content"].get<std::string>(), token["id"].get<int64_t>(), special});
    }
  }
  return std::make_unique<Gpt2BpeTokenizer>(spec);
}

}  // namespace destein

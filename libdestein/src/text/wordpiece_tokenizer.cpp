// BERT's WordPiece pipeline, written from the Hugging Face tokenizers library (v0.22):
// normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece/mod.rs.

#include "text/wordpiece_tokenizer.hpp"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <fstream>

#include "check.hpp"
#include "text/text_util.hpp"

namespace destein {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_bert_whitespace(char32_t c) {
  return c == '\t' || c == '\n' || c == '\r' ||
         u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

// Rust's unicode_categories `is_other`: Cc, Cf, Cs, Co and Cn.
bool is_bert_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_SURROGATE:
    case U_PRIVATE_USE_CHAR:
    case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// ASCII punctuation (which includes symbols such as $ + < = > ^ ` | ~) or any Unicode P*.
bool is_bert_punctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  return u_ispunct(static_cast<UChar32>(c));
}

std::u32string nfd_without_marks(const std::u32string& in) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(err);
  DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: cannot load the NFD normalizer ({})", u_errorName(err));
  icu::UnicodeString src = icu::UnicodeString::fromUTF32(
      reinterpret_cast<const UChar32*>(in.data()), static_cast<int32_t>(in.size()));
  icu::UnicodeString dst = nfd->normalize(src, err);
  DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: NFD normalisation failed ({})", u_errorName(err));
  std::u32string out;
  for (int32_t i = 0; i < dst.length();) {
    const UChar32 c = dst.char32At(i);
    i += U16_LENGTH(c);
    if (u_charType(c) != U_NON_SPACING_MARK) out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

// Each character by its full lower-case mapping on its own (İ gives i + U+0307), as
// NormalizedString::lowercase maps char by char, without a context for final sigma.
std::u32string lowercase_each(const std::u32string& in) {
  std::u32string out;
  for (char32_t c : in) {
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    UChar src[2];
    int32_t n = 0;
    U16_APPEND_UNSAFE(src, n, static_cast<UChar32>(c));
    UChar dst[8];
    UErrorCode err = U_ZERO_ERROR;
    const int32_t m = u_strToLower(dst, 8, src, n, "", &err);
    DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: lower-casing U+{:04X} failed ({})",
                     static_cast<uint32_t>(c), u_errorName(err));
    for (int32_t i = 0; i < m;) {
      UChar32 l;
      U16_NEXT(dst, i, m, l);
      out.push_back(static_cast<char32_t>(l));
    }
  }
  return out;
}

std::string utf8_of(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) text_detail::append_utf8(out, c);
  return out;
}

// A tokenizer_config.json token: a string, or an AddedToken object with "content".
std::optional<std::string> config_token(const json& config, const char* key,
                                        const std::string& file) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  DESTEIN_CHECK_IO(it->is_object() && it->contains("content") && (*it)["content"].is_string(),
                   "{}: '{}' must be a string or an object with a string 'content', found {}", file,
                   key, it->dump());
  return (*it)["content"].get<std::string>();
}

template <typename T>
T json_field(const json& obj, const char* key, T fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw std::runtime_error(
        fmt::format("{}: '{}' has the wrong type ({})", where, key, it->dump()));
  }
}

std::unique_ptr<WordPieceTokenizer> load_vocab_txt(const fs::path& vocab_file) {
  const std::string file = vocab_file.string();
  const std::string text = text_detail::read_file(vocab_file, "WordPiece vocabulary");
  std::vector<std::string> vocab;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    // Rust's trim_end: trailing Unicode whitespace; an ASCII trim covers real vocabularies.
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    vocab.push_back(std::move(line));
    start = end + 1;
  }
  DESTEIN_CHECK_IO(!vocab.empty(), "{}: empty WordPiece vocabulary", file);

  WordPieceOptions options;
  std::vector<std::string> special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  const fs::path config_path = vocab_file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    const std::string where = config_path.string();
    const json config = text_detail::parse_json_file(config_path, "tokenizer config");
    DESTEIN_CHECK_IO(config.is_object(), "{}: expected a JSON object", where);
    options.lowercase = json_field<bool>(config, "do_lower_case", true, where);
    auto sa = config.find("strip_accents");
    if (sa != config.end() && !sa->is_null())
      options.strip_accents = json_field<bool>(config, "strip_accents", true, where);
    options.handle_chinese_chars = json_field<bool>(config, "tokenize_chinese_chars", true, where);
    special.clear();
    for (const char* key : {"pad_token", "unk_token", "cls_token", "sep_token", "mask_token"}) {
      if (auto t = config_token(config, key, where)) special.push_back(*t);
    }
    if (auto unk = config_token(config, "unk_token", where)) options.unk_token = *unk;
  }
  // Special tokens the vocabulary lacks are not tokens of this model (BertTokenizerFast
  // would add them past the vocabulary); only those it has are matched in text.
  std::vector<std::string> known;
  for (const auto& t : special) {
    if (std::find(vocab.begin(), vocab.end(), t) != vocab.end()) known.push_back(t);
  }
  try {
    return std::make_unique<WordPieceTokenizer>(std::move(vocab), options, known);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: {}", file, e.what()));
  }
}

std::unique_ptr<WordPieceTokenizer> load_wordpiece_json(const fs::path& json_file) {
  const std::string file = json_file.string();
  const json root = text_detail::parse_json_file(json_file, "tokenizer file");
  DESTEIN_CHECK_IO(root.is_object() && root.contains("model") && root["model"].is_object(),
                   "{}: expected an object with a 'model' object", file);
  const json& model = root["model"];
  DESTEIN_CHECK_IO(model.value("type", "") == "WordPiece",
                   "{}: model.type is '{}', expected WordPiece", file, model.value("type", ""));
  WordPieceOptions options;
  options.unk_token = json_field<std::string>(model, "unk_token", "[UNK]", file + ": model");
  options.continuing_subword_prefix =
      json_field<std::string>(model, "continuing_subword_prefix", "##", file + ": model");
  options.max_input_chars_per_word =
      json_field<int64_t>(model, "max_input_chars_per_word", 100, file + ": model");
  DESTEIN_CHECK_IO(model.contains("vocab") && model["vocab"].is_object(),
                   "{}: model.vocab must be an object", file);
  std::vector<std::string> vocab(model["vocab"].size());
  for (const auto& [token, id] : model["vocab"].items()) {
    DESTEIN_CHECK_IO(
        id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<size_t>() < vocab.size(),
        "{}: model.vocab['{}'] must be an id in [0, {}), found {}", file, token, vocab.size(),
        id.dump());
    vocab[id.get<size_t>()] = token;
  }

  const json normalizer = root.value("normalizer", json());
  if (normalizer.is_null()) {
    options.clean_text = options.handle_chinese_chars = options.lowercase = false;
    options.strip_accents = false;
  } else {
    DESTEIN_CHECK_IO(normalizer.is_object() && normalizer.value("type", "") == "BertNormalizer",
                     "{}: normalizer '{}' is not implemented for WordPiece (only BertNormalizer)",
                     file,
                     normalizer.is_object() ? normalizer.value("type", "") : normalizer.dump());
    const std::string where = file + ": normalizer";
    options.clean_text = json_field<bool>(normalizer, "clean_text", true, where);
    options.handle_chinese_chars =
        json_field<bool>(normalizer, "handle_chinese_chars", true, where);
    options.lowercase = json_field<bool>(normalizer, "lowercase", true, where);
    if (normalizer.contains("strip_accents") && !normalizer["strip_accents"].is_null()) {
      options.strip_accents = json_field<bool>(normalizer, "strip_accents", true, where);
    }
  }
  const json pre = root.value("pre_tokenizer", json());
  DESTEIN_CHECK_IO(
      pre.is_object() && pre.value("type", "") == "BertPreTokenizer",
      "{}: pre_tokenizer '{}' is not implemented for WordPiece (only BertPreTokenizer)", file,
      pre.is_object() ? pre.value("type", "") : pre.dump());

  std::vector<std::string> special;
  for (const auto& added : root.value("added_tokens", json::array())) {
    const std::string content =
        json_field<std::string>(added, "content", "", file + ": added_tokens");
    for (const char* flag : {"lstrip", "rstrip", "single_word", "normalized"}) {
      DESTEIN_CHECK_IO(
          !json_field<bool>(added, flag, false, file + ": added_tokens"),
          "{}: added_tokens '{}' has {} true, which the WordPiece loader does not implement", file,
          content, flag);
    }
    special.push_back(content);
  }
  try {
    return std::make_unique<WordPieceTokenizer>(std::move(vocab), options, special);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: {}", file, e.what()));
  }
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions options,
                                       std::vector<std::string> special_tokens)
    : vocab_(std::move(vocab)),
      options_(std::move(options)),
      special_tokens_(std::move(special_tokens)) {
  for (size_t i = 0; i < vocab_.size(); ++i) token_ids_[vocab_[i]] = static_cast<int64_t>(i);
  auto unk = token_id(options_.unk_token);
  DESTEIN_CHECK_ARG(unk.has_value(), "unk_token '{}' is not in the vocabulary", options_.unk_token);
  unk_id_ = *unk;
  for (const auto& t : special_tokens_) {
    DESTEIN_CHECK_ARG(token_id(t).has_value(), "special token '{}' is not in the vocabulary", t);
  }
  // Longest first, so that the scan below finds the leftmost-longest match.
  std::sort(special_tokens_.begin(), special_tokens_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

std::optional<int64_t> WordPieceTokenizer::token_id(std::string_view content) const {
  auto it = token_ids_.find(std::string(content));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

std::vector<int64_t> WordPieceTokenizer::encode(std::string_view raw) const {
  const std::string text = text_detail::replace_invalid_utf8(raw);
  std::vector<int64_t> out;
  size_t segment = 0;
  for (size_t i = 0; i < text.size();) {
    const std::string* match = nullptr;
    for (const auto& t : special_tokens_) {
      if (!t.empty() && text.compare(i, t.size(), t) == 0) {
        match = &t;
        break;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    encode_segment(std::string_view(text).substr(segment, i - segment), out);
    out.push_back(*token_id(*match));
    i += match->size();
    segment = i;
  }
  encode_segment(std::string_view(text).substr(segment), out);
  return out;
}

void WordPieceTokenizer::encode_segment(std::string_view text, std::vector<int64_t>& out) const {
  if (text.empty()) return;
  // BertNormalizer: clean, CJK spacing, accents, case, in that order.
  std::u32string s;
  for (char32_t c : text_detail::code_points(text)) {
    if (options_.clean_text) {
      if (c == 0 || c == 0xFFFD || is_bert_control(c)) continue;
      if (is_bert_whitespace(c)) c = ' ';
    }
    if (options_.handle_chinese_chars && is_chinese_char(c)) {
      s.push_back(' ');
      s.push_back(c);
      s.push_back(' ');
    } else {
      s.push_back(c);
    }
  }
  if (options_.strip_accents.value_or(options_.lowercase)) s = nfd_without_marks(s);
  if (options_.lowercase) s = lowercase_each(s);

  // BertPreTokenizer: whitespace separates words and is dropped; punctuation stands alone.
  std::u32string word;
  for (char32_t c : s) {
    if (is_bert_whitespace(c)) {
      encode_word(word, out);
      word.clear();
    } else if (is_bert_punctuation(c)) {
      encode_word(word, out);
      word.assign(1, c);
      encode_word(word, out);
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  encode_word(word, out);
}

void WordPieceTokenizer::encode_word(const std::u32string& word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (static_cast<int64_t>(word.size()) > options_.max_input_chars_per_word) {
    out.push_back(unk_id_);
    return;
  }
  std::vector<int64_t> pieces;
  size_t start = 0;
  while (start < word.size()) {
    std::optional<int64_t> found;
    size_t end = word.size();
    for (; end > start; --end) {
      std::string piece = start > 0 ? options_.continuing_subword_prefix : std::string();
      piece += utf8_of(word.substr(start, end - start));
      if (auto id = token_id(piece)) {
        found = id;
        break;
      }
    }
    if (!found) {
      out.push_back(unk_id_);
      return;
    }
    pieces.push_back(*found);
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

std::string WordPieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  const std::string& prefix = options_.continuing_subword_prefix;
  for (int64_t id : ids) {
    DESTEIN_CHECK_ARG(id >= 0 && id < vocab_size(), "token id {} is outside [0, {})", id,
                      vocab_size());
    const std::string& token = vocab_[static_cast<size_t>(id)];
    if (std::find(special_tokens_.begin(), special_tokens_.end(), token) != special_tokens_.end())
      continue;
    if (!out.empty() && token.compare(0, prefix.size(), prefix) == 0) {
      out += token.substr(prefix.size());
    } else {
      if (!out.empty()) out += ' ';
      out += token;
    }
  }
  return out;
}

std::unique_ptr<WordPieceTokenizer> load_wordpiece_tokenizer(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::is_regular_file(path / "tokenizer.json", ec)) {
      const json root = text_detail::parse_json_file(path / "tokenizer.json", "tokenizer file");
      if (root.is_object() && root.contains("model") &&
          root["model"].value("type", "") == "WordPiece") {
        return load_wordpiece_json(path / "tokenizer.json");
      }
    }
    DESTEIN_CHECK_IO(
        fs::is_regular_file(path / "vocab.txt", ec),
        "{}: no WordPiece tokenizer in the folder (expected vocab.txt, or tokenizer.json with "
        "model.type WordPiece)",
        path.string());
    return load_vocab_txt(path / "vocab.txt");
  }
  if (path.extension() == ".json") return load_wordpiece_json(path);
  return load_vocab_txt(path);
}

}  // namespace destein

// Hugging Face tokenizer.json pipelines, written from the Hugging Face tokenizers library
// (Rust, v0.22) so that every step gives its result: the added vocabulary
// (tokenizer/added_vocabulary.rs), normalizers, pre-tokenizers, the BPE model
// (models/bpe/model.rs, word.rs), post-processors and decoders. Each component is parsed
// into a small struct at load time; an option whose effect is not reproduced is refused
// there, by name, so that encode() never returns ids the library would not.

#include "text/hf_tokenizer.hpp"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "check.hpp"
#include "text/hf_loader.hpp"
#include "text/hf_regex.hpp"
#include "text/text_util.hpp"

namespace destein {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using text_detail::append_utf8;
using text_detail::HfPattern;

// The library caches words shorter than this; the cache only saves time.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = size_t{1} << 17;

// ---------------------------------------------------------------------------------------
// Unicode

// The code point at s[i] of well-formed UTF-8, advancing i.
char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const size_t n = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  char32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < n && i + k < s.size(); ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

// Rust's char::is_whitespace and regex \s: the White_Space property.
bool is_white_space(char32_t cp) {
  return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_WHITE_SPACE) != 0;
}

// Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector punctuation,
// Join_Control.
bool is_word_char(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL))
    return true;
  const uint32_t mask = U_GET_GC_MASK(c);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

// The last code point of non-empty well-formed UTF-8 and where it starts.
char32_t last_code_point(std::string_view s, size_t& start) {
  start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t i = start;
  return next_code_point(s, i);
}

// ---------------------------------------------------------------------------------------
// Byte-level alphabet (GPT-2's bytes_to_unicode)

struct ByteAlphabet {
  std::array<std::string, 256> byte_to_utf8;
  std::unordered_map<char32_t, unsigned char> char_to_byte;
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      append_utf8(a.byte_to_utf8[b], cp);
      a.char_to_byte[cp] = static_cast<unsigned char>(b);
    }
    return a;
  }();
  return alphabet;
}

// ---------------------------------------------------------------------------------------
// Reading the JSON

// Names the file and the JSON path in every load error.
struct Where {
  std::string file;
  std::string key;
  Where at(const std::string& sub) const { return {file, key + sub}; }
  std::string str() const { return fmt::format("tokenizer file '{}': {}", file, key); }
};

[[noreturn]] void refuse(const Where& w, const std::string& what) {
  throw std::runtime_error(fmt::format(
      "{}: {} is not supported: destein cannot reproduce it exactly, so it refuses the tokenizer "
      "rather than approximate it (docs/tokenizers.md lists what is supported)",
      w.str(), what));
}

const json& member(const json& obj, const char* name, const Where& w) {
  DESTEIN_CHECK_IO(obj.is_object() && obj.contains(name),
                   "{}: expected an object with \"{}\", found {}", w.str(), name,
                   obj.dump().substr(0, 200));
  return obj[name];
}

std::string get_string(const json& obj, const char* name, const Where& w) {
  const json& v = member(obj, name, w);
  DESTEIN_CHECK_IO(v.is_string(), "{}.{}: expected a string, found {}", w.str(), name,
                   v.dump().substr(0, 200));
  return v.get<std::string>();
}

bool get_bool(const json& obj, const char* name, bool fallback, const Where& w) {
  if (!obj.contains(name) || obj[name].is_null()) return fallback;
  DESTEIN_CHECK_IO(obj[name].is_boolean(), "{}.{}: expected true or false, found {}", w.str(), name,
                   obj[name].dump());
  return obj[name].get<bool>();
}

// Allows only the listed keys: an unknown option could change the result.
void only_keys(const json& obj, std::initializer_list<const char*> keys, const Where& w) {
  for (const auto& [key, value] : obj.items()) {
    if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; })) {
      refuse(w, fmt::format("option \"{}\" (= {}) of {}", key, value.dump().substr(0, 80),
                            obj.value("type", std::string("this component"))));
    }
  }
}

// {"String": s} or {"Regex": r}.
HfPattern parse_pattern(const json& obj, const Where& w) {
  DESTEIN_CHECK_IO(
      obj.is_object() && obj.size() == 1 && (obj.contains("String") || obj.contains("Regex")),
      "{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}, found {}", w.str(), obj.dump());
  if (obj.contains("String")) {
    return HfPattern::literal(get_string(obj, "String", w), w.at(".String").str());
  }
  return HfPattern::regex(get_string(obj, "Regex", w), w.at(".Regex").str());
}

std::string type_of(const json& obj, const Where& w) {
  DESTEIN_CHECK_IO(obj.is_object() && obj.contains("type") && obj["type"].is_string(),
                   "{}: expected an object with a string \"type\", found {}", w.str(),
                   obj.dump().substr(0, 200));
  return obj["type"].get<std::string>();
}

// A component and, for a Sequence, its parts in order.
void flatten(const json& obj, const char* list_key, const Where& w,
             std::vector<std::pair<json, Where>>& out) {
  if (obj.is_null()) return;
  const std::string type = type_of(obj, w);
  if (type != "Sequence") {
    out.emplace_back(obj, w);
    return;
  }
  const json& parts = member(obj, list_key, w);
  DESTEIN_CHECK_IO(parts.is_array(), "{}.{}: expected an array", w.str(), list_key);
  for (size_t i = 0; i < parts.size(); ++i) {
    flatten(parts[i], list_key, w.at(fmt::format(".{}[{}]", list_key, i)), out);
  }
}

// ---------------------------------------------------------------------------------------
// Normalizers

struct Normalizer {
  enum class Kind { kUnicode, kReplace, kPrepend } kind = Kind::kUnicode;
  const icu::Normalizer2* unicode = nullptr;
  std::optional<HfPattern> pattern;
  std::string content;

  void apply(std::string& s) const {
    switch (kind) {
      case Kind::kUnicode: {
        UErrorCode err = U_ZERO_ERROR;
        const icu::UnicodeString u = icu::UnicodeString::fromUTF8(
            icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
        const icu::UnicodeString normalized = unicode->normalize(u, err);
        DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: Unicode normalisation failed ({})",
                         u_errorName(err));
        s.clear();
        normalized.toUTF8String(s);
        return;
      }
      case Kind::kReplace: {
        std::string out;
        size_t prev = 0;
        for (const auto& [begin, end] : pattern->find_all(s)) {
          out.append(s, prev, begin - prev);
          out += content;
          prev = end;
        }
        out.append(s, prev, std::string::npos);
        s = std::move(out);
        return;
      }
      case Kind::kPrepend:
        if (!s.empty()) s.insert(0, content);
        return;
    }
  }
};

std::vector<Normalizer> parse_normalizers(const json& root, const std::string& file) {
  std::vector<std::pair<json, Where>> parts;
  if (root.contains("normalizer"))
    flatten(root["normalizer"], "normalizers", {file, "normalizer"}, parts);
  std::vector<Normalizer> out;
  for (const auto& [obj, w] : parts) {
    const std::string type = type_of(obj, w);
    UErrorCode err = U_ZERO_ERROR;
    Normalizer n;
    if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
      only_keys(obj, {"type"}, w);
      n.unicode = type == "NFC"    ? icu::Normalizer2::getNFCInstance(err)
                  : type == "NFD"  ? icu::Normalizer2::getNFDInstance(err)
                  : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(err)
                                   : icu::Normalizer2::getNFKDInstance(err);
      DESTEIN_CHECK_IO(U_SUCCESS(err), "ICU: cannot load the {} normalizer ({})", type,
                       u_errorName(err));
    } else if (type == "Replace") {
      only_keys(obj, {"type", "pattern", "content"}, w);
      n.kind = Normalizer::Kind::kReplace;
      n.pattern = parse_pattern(member(obj, "pattern", w), w.at(".pattern"));
      n.content = get_string(obj, "content", w);
    } else if (type == "Prepend") {
      only_keys(obj, {"type", "prepend"}, w);
      n.kind = Normalizer::Kind::kPrepend;
      n.content = get_string(obj, "prepend", w);
    } else {
      refuse(w, fmt::format("normalizer type \"{}\"", type));
    }
    out.push_back(std::move(n));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Pre-tokenizers

// A piece of text on its way to the model. `at_origin`: it starts at offset 0 of the
// original text (what Metaspace's prepend_scheme "first" looks at).
struct Piece {
  std::string text;
  bool at_origin;
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// NormalizedString::split: the spans to keep, by behaviour, empty ones dropped.
void split_piece(const Piece& piece, const std::vector<HfPattern::Span>& spans, Behavior behavior,
                 std::vector<Piece>& out) {
  std::vector<std::pair<size_t, size_t>> kept;
  switch (behavior) {
    case Behavior::kIsolated:
      for (const auto& s : spans) kept.emplace_back(s.begin, s.end);
      break;
    case Behavior::kRemoved:
      for (const auto& s : spans) {
        if (!s.is_match) kept.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kContiguous: {
      bool previous = false;
      for (const auto& s : spans) {
        if (s.is_match == previous && !kept.empty()) {
          kept.back().second = s.end;
        } else {
          kept.emplace_back(s.begin, s.end);
        }
        previous = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool previous = false;
      for (const auto& s : spans) {
        if (s.is_match && !previous && !kept.empty()) {
          kept.back().second = s.end;
        } else {
          kept.emplace_back(s.begin, s.end);
        }
        previous = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous && !kept.empty()) {
          kept.back().first = it->begin;
        } else {
          kept.emplace_back(it->begin, it->end);
        }
        previous = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const auto& [begin, end] : kept) {
    if (end > begin)
      out.push_back({piece.text.substr(begin, end - begin), piece.at_origin && begin == 0});
  }
}

// ByteLevel's regex, GPT-2's pattern (byte_level.rs), in Oniguruma syntax.
constexpr const char* kByteLevelRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct PreTokenizer {
  enum class Kind { kSplit, kByteLevel, kMetaspace } kind = Kind::kSplit;
  std::optional<HfPattern> pattern;  // Split, ByteLevel with use_regex, Metaspace with split
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;

  void apply(std::vector<Piece>& pieces) const {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    switch (kind) {
      case Kind::kSplit:
        for (const Piece& p : pieces) {
          auto spans = pattern->spans(p.text);
          if (invert) {
            for (auto& s : spans) s.is_match = !s.is_match;
          }
          split_piece(p, spans, behavior, out);
        }
        break;
      case Kind::kByteLevel: {
        for (Piece p : pieces) {
          if (add_prefix_space && p.text.front() != ' ') p.text.insert(0, " ");
          if (pattern) {
            split_piece(p, pattern->spans(p.text), Behavior::kIsolated, out);
          } else {
            out.push_back(std::move(p));
          }
        }
        const ByteAlphabet& alphabet = byte_alphabet();
        for (Piece& p : out) {
          std::string mapped;
          mapped.reserve(p.text.size() * 2);
          for (char c : p.text) mapped += alphabet.byte_to_utf8[static_cast<unsigned char>(c)];
          p.text = std::move(mapped);
        }
        break;
      }
      case Kind::kMetaspace:
        for (Piece p : pieces) {
          std::string replaced;
          for (char c : p.text) {
            if (c == ' ') {
              replaced += replacement;
            } else {
              replaced += c;
            }
          }
          p.text = std::move(replaced);
          const bool starts = p.text.compare(0, replacement.size(), replacement) == 0;
          if (!starts &&
              (prepend == Prepend::kAlways || (prepend == Prepend::kFirst && p.at_origin))) {
            p.text.insert(0, replacement);
          }
          if (pattern) {
            split_piece(p, pattern->spans(p.text), Behavior::kMergedWithNext, out);
          } else {
            out.push_back(std::move(p));
          }
        }
        break;
    }
    pieces = std::move(out);
  }
};

Behavior parse_behavior(const json& obj, const Where& w) {
  const std::string b = get_string(obj, "behavior", w);
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  throw std::runtime_error(
      fmt::format("{}.behavior: \"{}\" is not one of Removed, Isolated, "
                  "MergedWithPrevious, MergedWithNext, Contiguous",
                  w.str(), b));
}

std::vector<PreTokenizer> parse_pre_tokenizers(const json& root, const std::string& file,
                                               const std::vector<Normalizer>& normalizers) {
  std::vector<std::pair<json, Where>> parts;
  if (root.contains("pre_tokenizer"))
    flatten(root["pre_tokenizer"], "pretokenizers", {file, "pre_tokenizer"}, parts);
  std::vector<PreTokenizer> out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& [obj, w] = parts[i];
    const std::string type = type_of(obj, w);
    PreTokenizer p;
    if (type == "Split") {
      only_keys(obj, {"type", "pattern", "behavior", "invert"}, w);
      p.pattern = parse_pattern(member(obj, "pattern", w), w.at(".pattern"));
      p.behavior = parse_behavior(obj, w);
      p.invert = get_bool(obj, "invert", false, w);
    } else if (type == "ByteLevel") {
      only_keys(obj, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, w);
      p.kind = PreTokenizer::Kind::kByteLevel;
      p.add_prefix_space = get_bool(obj, "add_prefix_space", true, w);
      if (get_bool(obj, "use_regex", true, w))
        p.pattern = HfPattern::regex(kByteLevelRegex, w.str());
    } else if (type == "Metaspace") {
      only_keys(obj,
                {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"},
                w);
      p.kind = PreTokenizer::Kind::kMetaspace;
      p.replacement = get_string(obj, "replacement", w);
      size_t at = 0;
      DESTEIN_CHECK_IO(!p.replacement.empty() &&
                           (next_code_point(p.replacement, at), at == p.replacement.size()),
                       "{}.replacement: expected one character, found \"{}\"", w.str(),
                       p.replacement);
      if (obj.contains("prepend_scheme")) {
        const std::string scheme = get_string(obj, "prepend_scheme", w);
        if (scheme == "always") {
          p.prepend = PreTokenizer::Prepend::kAlways;
        } else if (scheme == "first") {
          p.prepend = PreTokenizer::Prepend::kFirst;
        } else if (scheme == "never") {
          p.prepend = PreTokenizer::Prepend::kNever;
        } else {
          throw std::runtime_error(fmt::format(
              "{}.prepend_scheme: \"{}\" is not always, first or never", w.str(), scheme));
        }
      } else {
        // The older form: add_prefix_space true meant "always".
        p.prepend = get_bool(obj, "add_prefix_space", true, w) ? PreTokenizer::Prepend::kAlways
                                                               : PreTokenizer::Prepend::kNever;
      }
      if (p.prepend == PreTokenizer::Prepend::kFirst) {
        // "first" asks whether a piece starts at original offset 0; that is tracked exactly
        // only while no earlier step moved text around.
        const bool prepends =
            std::any_of(normalizers.begin(), normalizers.end(),
                        [](const Normalizer& n) { return n.kind == Normalizer::Kind::kPrepend; });
        if (i > 0 || prepends) {
          refuse(w.at(".prepend_scheme"),
                 "Metaspace prepend_scheme \"first\" after another pre-tokenizer or a Prepend "
                 "normalizer");
        }
      }
      if (get_bool(obj, "split", true, w)) p.pattern = HfPattern::literal(p.replacement, w.str());
    } else {
      refuse(w, fmt::format("pre-tokenizer type \"{}\"", type));
    }
    out.push_back(std::move(p));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Decoders

struct DecoderStep {
  enum class Kind {
    kByteLevel,
    kReplace,
    kByteFallback,
    kFuse,
    kStrip,
    kMetaspace
  } kind = Kind::kByteLevel;
  std::optional<HfPattern> pattern;  // Replace
  std::string content;               // Replace
  char32_t strip_char = 0;           // Strip; Metaspace's replacement
  size_t strip_start = 0, strip_stop = 0;
  bool metaspace_prepends = true;

  void apply(std::vector<std::string>& tokens) const {
    switch (kind) {
      case Kind::kByteLevel: {
        const ByteAlphabet& alphabet = byte_alphabet();
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string mapped;
          bool all = true;
          for (size_t i = 0; i < t.size() && all;) {
            const auto it = alphabet.char_to_byte.find(next_code_point(t, i));
            if (it == alphabet.char_to_byte.end()) {
              all = false;
            } else {
              mapped += static_cast<char>(it->second);
            }
          }
          bytes += all ? mapped : t;
        }
        tokens = {text_detail::replace_invalid_utf8(bytes)};
        return;
      }
      case Kind::kReplace:
        for (std::string& t : tokens) {
          std::string out;
          size_t prev = 0;
          for (const auto& [begin, end] : pattern->find_all(t)) {
            out.append(t, prev, begin - prev);
            out += content;
            prev = end;
          }
          out.append(t, prev, std::string::npos);
          t = std::move(out);
        }
        return;
      case Kind::kByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        const auto flush = [&] {
          if (pending.empty()) return;
          if (text_detail::is_valid_utf8(pending)) {
            out.push_back(pending);
          } else {
            for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
        };
        for (std::string& t : tokens) {
          const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) &&
              hex(t[4])) {
            pending += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        return;
      }
      case Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {all};
        return;
      }
      case Kind::kStrip:
        for (std::string& t : tokens) {
          std::vector<char32_t> cps = text_detail::code_points(t);
          size_t start_cut = 0;
          for (size_t i = 0; i < std::min(strip_start, cps.size()) && cps[i] == strip_char; ++i)
            start_cut = i + 1;
          size_t stop_cut = cps.size();
          for (size_t i = 0; i < strip_stop && i < cps.size(); ++i) {
            const size_t index = cps.size() - i - 1;
            if (cps[index] != strip_char) break;
            stop_cut = index;
          }
          std::string out;
          for (size_t i = start_cut; i < std::max(start_cut, stop_cut); ++i)
            append_utf8(out, cps[i]);
          t = std::move(out);
        }
        return;
      case Kind::kMetaspace:
        for (size_t k = 0; k < tokens.size(); ++k) {
          std::string out;
          const std::string& t = tokens[k];
          for (size_t i = 0; i < t.size();) {
            const size_t from = i;
            const char32_t cp = next_code_point(t, i);
            if (cp == strip_char) {
              if (!(k == 0 && metaspace_prepends)) out += ' ';
            } else {
              out.append(t, from, i - from);
            }
          }
          tokens[k] = std::move(out);
        }
        return;
    }
  }
};

char32_t single_char(const std::string& s, const Where& w) {
  size_t at = 0;
  DESTEIN_CHECK_IO(!s.empty() && (next_code_point(s, at), at == s.size()),
                   "{}: expected one character, found \"{}\"", w.str(), s);
  at = 0;
  return next_code_point(s, at);
}

std::vector<DecoderStep> parse_decoders(const json& root, const std::string& file) {
  std::vector<std::pair<json, Where>> parts;
  if (root.contains("decoder")) flatten(root["decoder"], "decoders", {file, "decoder"}, parts);
  std::vector<DecoderStep> out;
  for (const auto& [obj, w] : parts) {
    const std::string type = type_of(obj, w);
    DecoderStep d;
    if (type == "ByteLevel") {
      only_keys(obj, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, w);
    } else if (type == "Replace") {
      only_keys(obj, {"type", "pattern", "content"}, w);
      d.kind = DecoderStep::Kind::kReplace;
      d.pattern = parse_pattern(member(obj, "pattern", w), w.at(".pattern"));
      d.content = get_string(obj, "content", w);
    } else if (type == "ByteFallback") {
      only_keys(obj, {"type"}, w);
      d.kind = DecoderStep::Kind::kByteFallback;
    } else if (type == "Fuse") {
      only_keys(obj, {"type"}, w);
      d.kind = DecoderStep::Kind::kFuse;
    } else if (type == "Strip") {
      only_keys(obj, {"type", "content", "start", "stop"}, w);
      d.kind = DecoderStep::Kind::kStrip;
      d.strip_char = single_char(get_string(obj, "content", w), w.at(".content"));
      for (const char* key : {"start", "stop"}) {
        const json& v = member(obj, key, w);
        DESTEIN_CHECK_IO(v.is_number_unsigned(), "{}.{}: expected a count, found {}", w.str(), key,
                         v.dump());
      }
      d.strip_start = obj["start"].get<size_t>();
      d.strip_stop = obj["stop"].get<size_t>();
    } else if (type == "Metaspace") {
      only_keys(obj,
                {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"},
                w);
      d.kind = DecoderStep::Kind::kMetaspace;
      d.strip_char = single_char(get_string(obj, "replacement", w), w.at(".replacement"));
      if (obj.contains("prepend_scheme")) {
        d.metaspace_prepends = get_string(obj, "prepend_scheme", w) != "never";
      } else {
        d.metaspace_prepends = get_bool(obj, "add_prefix_space", true, w);
      }
    } else {
      refuse(w, fmt::format("decoder type \"{}\"", type));
    }
    out.push_back(std::move(d));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, single_word, lstrip, rstrip, normalized;
};

// Byte trie over the added tokens' contents: at each position the longest match, which is
// what the library's leftmost-longest Aho-Corasick automaton yields scanning left to right.
class Trie {
 public:
  bool empty() const { return size_ == 0; }
  void insert(std::string_view key, int32_t value) {
    if (key.empty()) return;
    size_t node = 0;
    for (char c : key) {
      const uint64_t edge = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
      auto it = edges_.find(edge);
      if (it == edges_.end()) {
        it = edges_.emplace(edge, values_.size()).first;
        values_.push_back(-1);
      }
      node = it->second;
    }
    if (values_[node] < 0) ++size_;
    if (values_[node] < 0) values_[node] = value;  // the first of equal contents wins
  }
  // Length and value of the longest key starting at s[pos]; length 0 when none.
  std::pair<size_t, int32_t> longest_at(std::string_view s, size_t pos) const {
    size_t node = 0, best_len = 0;
    int32_t best = -1;
    for (size_t i = pos; i < s.size(); ++i) {
      const auto it =
          edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (values_[node] >= 0) {
        best_len = i + 1 - pos;
        best = values_[node];
      }
    }
    return {best_len, best};
  }

 private:
  std::unordered_map<uint64_t, size_t> edges_;
  std::vector<int32_t> values_{-1};  // node 0 is the root
  size_t size_ = 0;
};

struct Segment {
  std::string text;
  int32_t id;  // the added token's id, or -1 for text still to tokenize
  bool at_origin;
};

// ---------------------------------------------------------------------------------------
// BPE model

struct MergeValue {
  uint32_t rank;
  int32_t id;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Symbol {
  int32_t id;
  int64_t prev, next;
  size_t len;
};

struct QueuedMerge {
  size_t pos;
  uint32_t rank;
  int32_t id;
  // The library's BinaryHeap pops the lowest rank first, then the leftmost position.
  bool operator<(const QueuedMerge& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

struct TemplatePart {
  bool sequence;             // $A
  std::vector<int32_t> ids;  // a special token's ids
};

// ---------------------------------------------------------------------------------------
// The tokenizer

class HfBpeTokenizer final : public HfTokenizer {
 public:
  HfBpeTokenizer(const json& root, const fs::path& path) : file_(path.string()) {
    DESTEIN_CHECK_IO(root.is_object(), "tokenizer file '{}': expected a JSON object at the top",
                     file_);
    for (const char* key : {"truncation", "padding"}) {
      if (root.contains(key) && !root[key].is_null()) {
        refuse({file_, key},
               fmt::format("a non-null \"{}\" (it changes what encode returns)", key));
      }
    }
    normalizers_ = parse_normalizers(root, file_);
    pre_tokenizers_ = parse_pre_tokenizers(root, file_, normalizers_);
    decoders_ = parse_decoders(root, file_);
    has_decoder_ = root.contains("decoder") && !root["decoder"].is_null();
    parse_model(member(root, "model", {file_, "(top level)"}), {file_, "model"});
    parse_added_tokens(root);
    parse_post_processor(root);
    read_config(path.parent_path() / "tokenizer_config.json");
  }

  std::vector<int64_t> encode(std::string_view text) const override { return run(text, false); }
  std::vector<int64_t> encode_with_special_tokens(std::string_view text) const override {
    return run(text, true);
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      DESTEIN_CHECK_ARG(id >= 0 && id < vocab_size() && has_token_[id],
                        "token id {} is not in the vocabulary of tokenizer file '{}' (ids 0..{})",
                        id, file_, vocab_size() - 1);
      if (skip_special_tokens && is_special_[id]) continue;
      tokens.push_back(id_to_token_[id]);
    }
    if (!has_decoder_) {
      std::string joined;
      for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
      return joined;
    }
    for (const DecoderStep& step : decoders_) step.apply(tokens);
    std::string text;
    for (const std::string& t : tokens) text += t;
    return text;
  }

  std::optional<int64_t> token_id(std::string_view content) const override {
    const std::string key(content);
    if (const auto it = added_ids_.find(key); it != added_ids_.end()) return it->second;
    if (const auto it = vocab_.find(key); it != vocab_.end()) return it->second;
    return std::nullopt;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int64_t> bos_id() const override { return bos_; }
  std::optional<int64_t> eos_id() const override { return eos_; }
  bool prepend_bos() const override { return prepend_bos_; }
  std::string kind() const override { return "hf-bpe"; }

 private:
  // -- loading

  void parse_model(const json& model, const Where& w) {
    const std::string type = model.value("type", std::string("BPE"));
    if (type != "BPE")
      refuse(w.at(".type"), fmt::format("model type \"{}\" (only BPE is implemented)", type));
    only_keys(model,
              {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
               "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"},
              w);
    if (model.contains("dropout") && !model["dropout"].is_null()) {
      const json& d = model["dropout"];
      if (!(d.is_number() && d.get<double>() == 0.0))
        refuse(w.at(".dropout"), "BPE dropout (random merges)");
    }
    const auto optional_string = [&](const char* key) -> std::optional<std::string> {
      if (!model.contains(key) || model[key].is_null()) return std::nullopt;
      return get_string(model, key, w);
    };
    unk_token_ = optional_string("unk_token");
    prefix_ = optional_string("continuing_subword_prefix");
    suffix_ = optional_string("end_of_word_suffix");
    fuse_unk_ = get_bool(model, "fuse_unk", false, w);
    byte_fallback_ = get_bool(model, "byte_fallback", false, w);
    ignore_merges_ = get_bool(model, "ignore_merges", false, w);

    const json& vocab = member(model, "vocab", w);
    DESTEIN_CHECK_IO(vocab.is_object(), "{}.vocab: expected an object mapping token to id",
                     w.str());
    vocab_.reserve(vocab.size());
    int64_t max_id = -1;
    for (const auto& [token, id] : vocab.items()) {
      DESTEIN_CHECK_IO(
          id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX,
          "{}.vocab[\"{}\"]: expected a non-negative integer id, found {}", w.str(), token,
          id.dump());
      vocab_.emplace(token, static_cast<int32_t>(id.get<int64_t>()));
      max_id = std::max(max_id, id.get<int64_t>());
    }
    grow(max_id);
    for (const auto& [token, id] : vocab_) {
      DESTEIN_CHECK_IO(!has_token_[id], "{}.vocab: tokens \"{}\" and \"{}\" share id {}", w.str(),
                       id_to_token_[id], token, id);
      id_to_token_[id] = token;
      has_token_[id] = true;
    }
    if (unk_token_) {
      const auto it = vocab_.find(*unk_token_);
      DESTEIN_CHECK_IO(it != vocab_.end(), "{}.unk_token: \"{}\" is not in the vocabulary", w.str(),
                       *unk_token_);
      unk_id_ = it->second;
    }
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        const auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
        byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
      }
    }

    const json& merges = member(model, "merges", w);
    DESTEIN_CHECK_IO(merges.is_array(), "{}.merges: expected an array", w.str());
    merges_.reserve(merges.size() * 2);
    const size_t prefix_len = prefix_ ? prefix_->size() : 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        DESTEIN_CHECK_IO(space != std::string::npos && s.find(' ', space + 1) == std::string::npos,
                         "{}.merges[{}]: expected \"left right\" with one space, found \"{}\"",
                         w.str(), i, s);
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        DESTEIN_CHECK_IO(
            m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
            "{}.merges[{}]: expected \"left right\" or [\"left\", \"right\"], found {}", w.str(), i,
            m.dump());
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      }
      const auto a = vocab_.find(left);
      const auto b = vocab_.find(right);
      DESTEIN_CHECK_IO(a != vocab_.end() && b != vocab_.end(),
                       "{}.merges[{}]: \"{}\" or \"{}\" is not in the vocabulary", w.str(), i, left,
                       right);
      DESTEIN_CHECK_IO(right.size() >= prefix_len,
                       "{}.merges[{}]: \"{}\" is shorter than the subword prefix", w.str(), i,
                       right);
      const std::string merged = left + right.substr(prefix_len);
      const auto c = vocab_.find(merged);
      DESTEIN_CHECK_IO(c != vocab_.end(),
                       "{}.merges[{}]: the merge makes \"{}\", not in the vocabulary", w.str(), i,
                       merged);
      // A repeated pair keeps its last rank, as the library's HashMap collect does.
      merges_.insert_or_assign(pair_key(a->second, b->second),
                               MergeValue{static_cast<uint32_t>(i), c->second});
    }
  }

  void grow(int64_t max_id) {
    if (max_id + 1 > static_cast<int64_t>(id_to_token_.size())) {
      id_to_token_.resize(max_id + 1);
      has_token_.resize(max_id + 1, false);
      is_special_.resize(max_id + 1, false);
    }
  }

  void parse_added_tokens(const json& root) {
    if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return;
    const json& list = root["added_tokens"];
    DESTEIN_CHECK_IO(list.is_array(), "tokenizer file '{}': added_tokens: expected an array",
                     file_);
    std::unordered_set<std::string> special_contents;
    std::vector<AddedToken> tokens;
    for (size_t i = 0; i < list.size(); ++i) {
      const Where w{file_, fmt::format("added_tokens[{}]", i)};
      const json& t = list[i];
      only_keys(t, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"},
                w);
      const json& id = member(t, "id", w);
      DESTEIN_CHECK_IO(
          id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX,
          "{}.id: expected a non-negative integer, found {}", w.str(), id.dump());
      AddedToken a{get_string(t, "content", w),
                   static_cast<int32_t>(id.get<int64_t>()),
                   get_bool(t, "special", false, w),
                   get_bool(t, "single_word", false, w),
                   get_bool(t, "lstrip", false, w),
                   get_bool(t, "rstrip", false, w),
                   false};
      a.normalized = get_bool(t, "normalized", !a.special, w);
      DESTEIN_CHECK_IO(!a.content.empty(), "{}.content: an added token cannot be empty", w.str());
      // The library gives an added token the id its content has in the model vocabulary.
      if (const auto it = vocab_.find(a.content); it != vocab_.end() && it->second != a.id) {
        refuse(w, fmt::format(
                      "added token \"{}\" with id {} while the model vocabulary gives it id {}",
                      a.content, a.id, it->second));
      }
      if (const auto it = added_ids_.find(a.content);
          it != added_ids_.end() && it->second != a.id) {
        refuse(w, fmt::format("added token \"{}\" listed twice, with ids {} and {}", a.content,
                              it->second, a.id));
      }
      grow(a.id);
      id_to_token_[a.id] = a.content;
      has_token_[a.id] = true;
      added_ids_[a.content] = a.id;
      if (a.special) special_contents.insert(a.content);
      tokens.push_back(std::move(a));
    }
    // Special tokens come first in the library's automaton, then the others; for equal
    // contents the first wins (they then share the id, checked above).
    std::stable_partition(tokens.begin(), tokens.end(),
                          [](const AddedToken& a) { return a.special; });
    for (const AddedToken& a : tokens) {
      const size_t index = added_.size();
      added_.push_back(a);
      if (a.normalized) {
        std::string pattern = a.content;
        for (const Normalizer& n : normalizers_) n.apply(pattern);
        normalized_trie_.insert(pattern, static_cast<int32_t>(index));
      } else {
        raw_trie_.insert(a.content, static_cast<int32_t>(index));
      }
    }
    // decode() skips a token whose text is a special token's content, model tokens included.
    for (size_t id = 0; id < id_to_token_.size(); ++id) {
      is_special_[id] = has_token_[id] && special_contents.count(id_to_token_[id]) > 0;
    }
  }

  std::vector<int32_t> special_ids(const json& entry, const Where& w) const {
    std::vector<int32_t> ids;
    const json& list = member(entry, "ids", w);
    DESTEIN_CHECK_IO(list.is_array(), "{}.ids: expected an array", w.str());
    for (const json& id : list) {
      DESTEIN_CHECK_IO(
          id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < vocab_size(),
          "{}.ids: {} is not an id of the vocabulary", w.str(), id.dump());
      ids.push_back(id.get<int32_t>());
    }
    return ids;
  }

  // [cls, sep]-style processors: "cls"/"sep" as ["token", id].
  int32_t pair_token(const json& obj, const char* key, const Where& w) const {
    const json& v = member(obj, key, w);
    DESTEIN_CHECK_IO(v.is_array() && v.size() == 2 && v[0].is_string() &&
                         v[1].is_number_integer() && v[1].get<int64_t>() >= 0 &&
                         v[1].get<int64_t>() < vocab_size(),
                     "{}.{}: expected [\"token\", id] with an id of the vocabulary, found {}",
                     w.str(), key, v.dump());
    return v[1].get<int32_t>();
  }

  void parse_post_processor(const json& root) {
    std::vector<std::pair<json, Where>> parts;
    if (root.contains("post_processor"))
      flatten(root["post_processor"], "processors", {file_, "post_processor"}, parts);
    for (const auto& [obj, w] : parts) {
      const std::string type = type_of(obj, w);
      std::vector<TemplatePart> single;
      if (type == "ByteLevel") {
        only_keys(obj, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, w);
        continue;  // offsets only
      }
      if (type == "TemplateProcessing") {
        only_keys(obj, {"type", "single", "pair", "special_tokens"}, w);
        const json& specials = member(obj, "special_tokens", w);
        const json& list = member(obj, "single", w);
        DESTEIN_CHECK_IO(list.is_array(), "{}.single: expected an array", w.str());
        for (size_t i = 0; i < list.size(); ++i) {
          const Where pw = w.at(fmt::format(".single[{}]", i));
          const json& piece = list[i];
          if (piece.is_object() && piece.contains("Sequence")) {
            DESTEIN_CHECK_IO(get_string(piece["Sequence"], "id", pw) == "A",
                             "{}: a single-sequence template can only hold sequence A", pw.str());
            single.push_back({true, {}});
          } else if (piece.is_object() && piece.contains("SpecialToken")) {
            const std::string name = get_string(piece["SpecialToken"], "id", pw);
            DESTEIN_CHECK_IO(specials.is_object() && specials.contains(name),
                             "{}: special token \"{}\" is not in {}.special_tokens", pw.str(), name,
                             w.str());
            single.push_back({false, special_ids(specials[name], w.at(".special_tokens." + name))});
          } else {
            throw std::runtime_error(fmt::format(
                "{}: expected {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}, found {}",
                pw.str(), piece.dump()));
          }
        }
      } else if (type == "BertProcessing" || type == "RobertaProcessing") {
        if (type == "BertProcessing") {
          only_keys(obj, {"type", "sep", "cls"}, w);
        } else {
          only_keys(obj, {"type", "sep", "cls", "trim_offsets", "add_prefix_space"}, w);
        }
        single = {
            {false, {pair_token(obj, "cls", w)}}, {true, {}}, {false, {pair_token(obj, "sep", w)}}};
      } else {
        refuse(w, fmt::format("post-processor type \"{}\"", type));
      }
      templates_.push_back(std::move(single));
    }
    // BOS: the one special token the first template puts before the text.
    if (!templates_.empty()) {
      const auto& t = templates_.front();
      if (!t.empty() && !t.front().sequence && t.front().ids.size() == 1) {
        bos_ = t.front().ids.front();
        prepend_bos_ = true;
      }
      if (t.size() > 1 && !t.back().sequence && t.back().ids.size() == 1)
        eos_ = t.back().ids.front();
    }
  }

  // eos_token (and bos_token when no template names one) of the tokenizer_config.json
  // beside the file.
  void read_config(const fs::path& config) {
    std::error_code ec;
    if (!fs::is_regular_file(config, ec)) return;
    const json cfg = text_detail::parse_json_file(config, "tokenizer config");
    const auto lookup = [&](const char* key) -> std::optional<int64_t> {
      if (!cfg.is_object() || !cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
      const json& v = cfg[key];
      std::string content;
      if (v.is_string()) {
        content = v.get<std::string>();
      } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        content = v["content"].get<std::string>();
      } else {
        throw std::runtime_error(fmt::format(
            "tokenizer config '{}': {}: expected a string or {{\"content\": ...}}, found {}",
            config.string(), key, v.dump()));
      }
      const auto id = token_id(content);
      DESTEIN_CHECK_IO(id.has_value(), "tokenizer config '{}': {} \"{}\" is not a token of '{}'",
                       config.string(), key, content, file_);
      return id;
    };
    if (auto eos = lookup("eos_token")) eos_ = eos;
    if (!bos_) bos_ = lookup("bos_token");
  }

  // -- encoding

  // AddedVocabulary::find_matches + split_with_indices.
  void split_added(const std::string& s, bool at_origin, const Trie& trie,
                   std::vector<Segment>& out) const {
    if (s.empty()) return;
    if (trie.empty()) {
      out.push_back({s, -1, at_origin});
      return;
    }
    size_t start_offset = 0;
    for (size_t pos = 0; pos < s.size();) {
      const auto [len, index] = trie.longest_at(s, pos);
      if (len == 0) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + len;
      pos = stop;  // the automaton goes on after the match, whatever happens to it below
      const AddedToken& token = added_[index];
      if (token.single_word) {
        size_t last_start = 0;
        const bool start_space =
            start == 0 ||
            !is_word_char(last_code_point(std::string_view(s).substr(0, start), last_start));
        size_t next = stop;
        const bool stop_space = stop == s.size() || !is_word_char(next_code_point(s, next));
        if (!start_space || !stop_space) continue;
      }
      if (token.lstrip) {
        size_t new_start = start;
        while (new_start > 0) {
          size_t char_start = 0;
          if (!is_white_space(
                  last_code_point(std::string_view(s).substr(0, new_start), char_start)))
            break;
          new_start = char_start;
        }
        start = std::max(new_start, start_offset);
      }
      if (token.rstrip) {
        for (size_t i = stop; i < s.size();) {
          size_t next = i;
          if (!is_white_space(next_code_point(s, next))) break;
          stop = i = next;
        }
      }
      if (start_offset < start)
        out.push_back(
            {s.substr(start_offset, start - start_offset), -1, at_origin && start_offset == 0});
      out.push_back({s.substr(start, stop - start), token.id, at_origin && start == 0});
      start_offset = stop;
    }
    if (start_offset < s.size())
      out.push_back({s.substr(start_offset), -1, at_origin && start_offset == 0});
  }

  std::vector<int64_t> run(std::string_view input, bool add_special_tokens) const {
    std::string text(input);
    if (!text_detail::is_valid_utf8(text)) text = text_detail::replace_invalid_utf8(text);

    std::vector<Segment> raw;
    split_added(text, true, raw_trie_, raw);
    std::vector<Segment> segments;
    for (Segment& seg : raw) {
      if (seg.id >= 0) {
        segments.push_back(std::move(seg));
        continue;
      }
      for (const Normalizer& n : normalizers_) n.apply(seg.text);
      split_added(seg.text, seg.at_origin, normalized_trie_, segments);
    }

    std::vector<int64_t> ids;
    ids.reserve(text.size() / 3 + 4);
    std::vector<Piece> pieces;
    for (const Segment& seg : segments) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      pieces.assign(1, Piece{seg.text, seg.at_origin});
      for (const PreTokenizer& p : pre_tokenizers_) p.apply(pieces);
      for (const Piece& p : pieces) tokenize_word(p.text, ids);
    }
    if (!add_special_tokens) return ids;
    for (const auto& tmpl : templates_) {
      std::vector<int64_t> wrapped;
      wrapped.reserve(ids.size() + 4);
      for (const TemplatePart& part : tmpl) {
        if (part.sequence) {
          wrapped.insert(wrapped.end(), ids.begin(), ids.end());
        } else {
          wrapped.insert(wrapped.end(), part.ids.begin(), part.ids.end());
        }
      }
      ids = std::move(wrapped);
    }
    return ids;
  }

  // BPE::tokenize of one pre-token.
  void tokenize_word(const std::string& word, std::vector<int64_t>& ids) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (const auto it = vocab_.find(word); it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < kMaxCachedWordBytes;
    if (cacheable) {
      std::shared_lock lock(cache_mutex_);
      if (const auto it = cache_.find(word); it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> result = merge_word(word);
    ids.insert(ids.end(), result.begin(), result.end());
    if (cacheable) {
      std::unique_lock lock(cache_mutex_);
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();
      cache_.emplace(word, std::move(result));
    }
  }

  // BPE::merge_word and Word::merge_all.
  std::vector<int32_t> merge_word(const std::string& w) const {
    std::vector<Symbol> symbols;
    symbols.reserve(w.size());
    const auto add = [&](int32_t id, size_t len) {
      const int64_t n = static_cast<int64_t>(symbols.size());
      if (!symbols.empty()) symbols.back().next = n;
      symbols.push_back({id, symbols.empty() ? -1 : n - 1, -1, len});
    };
    // A pending unknown token: its bytes grow while fuse_unk joins neighbours.
    bool unk = false;
    size_t unk_len = 0;
    for (size_t i = 0; i < w.size();) {
      const size_t begin = i;
      next_code_point(w, i);
      const size_t byte_len = i - begin;
      std::string s = w.substr(begin, byte_len);
      if (begin != 0 && prefix_) s = *prefix_ + s;
      if (i == w.size() && suffix_) s += *suffix_;
      if (const auto it = vocab_.find(s); it != vocab_.end()) {
        if (unk) {
          add(*unk_id_, unk_len);
          unk = false;
        }
        add(it->second, byte_len);
        continue;
      }
      if (byte_fallback_) {
        const bool all = std::all_of(s.begin(), s.end(), [&](char c) {
          return byte_ids_[static_cast<unsigned char>(c)] >= 0;
        });
        if (all) {
          for (char c : s) add(byte_ids_[static_cast<unsigned char>(c)], 1);
          continue;
        }
      }
      if (unk_id_) {
        if (unk && fuse_unk_) {
          unk_len += byte_len;
        } else {
          if (unk) add(*unk_id_, unk_len);
          unk = true;
          unk_len = byte_len;
        }
      }
      // Without an unk token the library drops the character, and so does this.
    }
    if (unk) add(*unk_id_, unk_len);

    std::priority_queue<QueuedMerge> queue;
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      if (const auto it = merges_.find(pair_key(symbols[k].id, symbols[k + 1].id));
          it != merges_.end()) {
        queue.push({k, it->second.rank, it->second.id});
      }
    }
    while (!queue.empty()) {
      const QueuedMerge top = queue.top();
      queue.pop();
      Symbol& cur = symbols[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      const size_t next_pos = static_cast<size_t>(cur.next);
      const Symbol right = symbols[next_pos];
      const auto it = merges_.find(pair_key(cur.id, right.id));
      if (it == merges_.end() || it->second.id != top.id) continue;  // an expired entry
      cur.id = top.id;
      cur.len += right.len;
      cur.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size())
        symbols[right.next].prev = top.pos;
      if (cur.prev >= 0) {
        const Symbol& prev = symbols[cur.prev];
        if (const auto m = merges_.find(pair_key(prev.id, cur.id)); m != merges_.end()) {
          queue.push({static_cast<size_t>(cur.prev), m->second.rank, m->second.id});
        }
      }
      if (cur.next >= 0 && static_cast<size_t>(cur.next) < symbols.size()) {
        if (const auto m = merges_.find(pair_key(cur.id, symbols[cur.next].id));
            m != merges_.end()) {
          queue.push({top.pos, m->second.rank, m->second.id});
        }
      }
    }
    std::vector<int32_t> out;
    out.reserve(symbols.size());
    for (const Symbol& s : symbols) {
      if (s.len != 0) out.push_back(s.id);
    }
    return out;
  }

  std::string file_;
  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_tokenizers_;
  std::vector<DecoderStep> decoders_;
  bool has_decoder_ = false;

  std::unordered_map<std::string, int32_t> vocab_;  // the model's
  std::unordered_map<uint64_t, MergeValue> merges_;
  std::optional<std::string> unk_token_, prefix_, suffix_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};

  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int32_t> added_ids_;
  Trie raw_trie_, normalized_trie_;

  std::vector<std::string> id_to_token_;
  std::vector<bool> has_token_, is_special_;

  std::vector<std::vector<TemplatePart>> templates_;
  std::optional<int64_t> bos_, eos_;
  bool prepend_bos_ = false;

  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace

std::unique_ptr<HfTokenizer> load_hf_tokenizer(const fs::path& tokenizer_json) {
  return text_detail::load_hf_tokenizer_json(
      text_detail::parse_json_file(tokenizer_json, "tokenizer file"), tokenizer_json);
}

std::unique_ptr<HfTokenizer> text_detail::load_hf_tokenizer_json(const json& root,
                                                                 const fs::path& path) {
  return std::make_unique<HfBpeTokenizer>(root, path);
}

}  // namespace destein

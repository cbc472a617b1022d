// tokenizer.json patterns with Oniguruma's meaning, run by PCRE2 (see hf_regex.hpp).
//
// The Hugging Face library compiles Split and Replace patterns with Oniguruma (Ruby
// syntax, UTF-8, no options). PCRE2 with UTF and UCP agrees with it on the constructs the
// real tokenizers use (\p{..} classes, (?i:..), lookahead, possessive and atomic forms,
// counted repeats); where the two differ, the translation below rewrites the construct to
// Oniguruma's meaning or refuses the pattern by name.

#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/hf_regex.hpp"

#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>

#include "check.hpp"

namespace destein::text_detail {

namespace {

[[noreturn]] void refuse(const std::string& where, const std::string& pattern,
                         const std::string& what) {
  throw std::runtime_error(fmt::format(
      "{}: regex {} uses {}, which destein cannot match exactly as the Hugging Face library "
      "(Oniguruma) does; refused rather than approximated",
      where, pattern, what));
}

bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

}  // namespace

std::string onig_to_pcre2(const std::string& p, const std::string& where) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  bool caseless = false;
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\') {
      DESTEIN_CHECK_IO(i + 1 < p.size(), "{}: regex {} ends in a lone backslash", where, p);
      const char d = p[i + 1];
      switch (d) {
        // Oniguruma's \s is the White_Space property; PCRE2's (UCP) leaves out U+0085 and
        // takes U+180E.
        case 's':
          out += "\\p{White_Space}";
          break;
        case 'S':
          out += "\\P{White_Space}";
          break;
        case 'v':
          out += "\\x{0B}";
          break;  // PCRE2's \v is a class of vertical spaces
        case 'u': {
          DESTEIN_CHECK_IO(i + 5 < p.size() && is_hex(p[i + 2]) && is_hex(p[i + 3]) &&
                               is_hex(p[i + 4]) && is_hex(p[i + 5]),
                           "{}: regex {}: \\u needs four hex digits", where, p);
          out += "\\x{" + p.substr(i + 2, 4) + "}";
          i += 6;
          continue;
        }
        case 'p':
        case 'P':
        case 'x':
        case 'n':
        case 'r':
        case 't':
        case 'f':
        case 'e':
        case 'a':
        case 'A':
        case 'z':
        case 'Z':
          out += c;
          out += d;
          break;
        default:
          if (static_cast<unsigned char>(d) < 0x80 &&
              !std::isalnum(static_cast<unsigned char>(d))) {
            out += c;  // an escaped punctuation character is itself in both
            out += d;
            break;
          }
          refuse(where, p, fmt::format("the escape \\{}", d));
      }
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') refuse(where, p, "a nested class or POSIX bracket inside [...]");
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&')
        refuse(where, p, "class intersection &&");
      if (c == ']') in_class = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') refuse(where, p, "']' first in a class");
      continue;
    }
    if (c == '(' && i + 1 < p.size() && p[i + 1] == '?') {
      const size_t k = i + 2;
      DESTEIN_CHECK_IO(k < p.size(), "{}: regex {} ends in '(?'", where, p);
      const char g = p[k];
      if (g == ':' || g == '=' || g == '!' || g == '>' ||
          (g == '<' && k + 1 < p.size() && (p[k + 1] == '=' || p[k + 1] == '!'))) {
        out += p.substr(i, 3);
        i += 3;
        continue;
      }
      // Inline options: only i (and -i) mean the same; Oniguruma's (?m) is PCRE2's (?s).
      size_t j = k;
      while (j < p.size() && (std::isalpha(static_cast<unsigned char>(p[j])) || p[j] == '-')) {
        if (p[j] != 'i' && p[j] != '-')
          refuse(where, p, fmt::format("the inline option '{}'", p[j]));
        if (p[j] == 'i') caseless = true;
        ++j;
      }
      if (j > k && j < p.size() && (p[j] == ':' || p[j] == ')')) {
        out += p.substr(i, j + 1 - i);
        i = j + 1;
        continue;
      }
      refuse(where, p,
             fmt::format("the group '{}'", p.substr(i, std::min<size_t>(4, p.size() - i))));
    }
    out += c;
    ++i;
  }
  DESTEIN_CHECK_IO(!in_class, "{}: regex {} has an unclosed '['", where, p);
  if (caseless) {
    // Oniguruma also folds one character to several (ß matches ss, ﬁ fi); PCRE2 folds one
    // to one. Literals that such a fold could produce are refused under (?i).
    std::string lower(p);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    if (std::any_of(p.begin(), p.end(),
                    [](char ch) { return static_cast<unsigned char>(ch) >= 0x80; })) {
      refuse(where, p, "a non-ASCII character under (?i) (Oniguruma's multi-character case folds)");
    }
    for (const char* seq : {"ss", "st", "ff", "fi", "fl"}) {
      if (lower.find(seq) != std::string::npos) {
        refuse(where, p,
               fmt::format("'{}' under (?i) (Oniguruma's multi-character case folds)", seq));
      }
    }
  }
  return out;
}

namespace {
struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
struct ContextDeleter {
  void operator()(pcre2_compile_context* ctx) const { pcre2_compile_context_free(ctx); }
};

pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create(1, nullptr));
  return data.get();
}
}  // namespace

struct HfPattern::Compiled {
  std::unique_ptr<pcre2_code, CodeDeleter> code;
  std::string source;
};

HfPattern::HfPattern() = default;
HfPattern::HfPattern(HfPattern&&) noexcept = default;
HfPattern& HfPattern::operator=(HfPattern&&) noexcept = default;
HfPattern::~HfPattern() = default;

HfPattern HfPattern::literal(std::string text, const std::string& where) {
  DESTEIN_CHECK_IO(!text.empty(), "{}: the pattern is an empty string, which matches everywhere",
                   where);
  HfPattern p;
  p.literal_ = std::move(text);
  p.where_ = where;
  return p;
}

HfPattern HfPattern::regex(const std::string& pattern, const std::string& where) {
  HfPattern p;
  p.where_ = where;
  p.regex_ = std::make_unique<Compiled>();
  p.regex_->source = pattern;
  const std::string translated = onig_to_pcre2(pattern, where);
  std::unique_ptr<pcre2_compile_context, ContextDeleter> ctx(pcre2_compile_context_create(nullptr));
  // Oniguruma's Ruby syntax: ^ and $ are line anchors, and only \n ends a line.
  pcre2_set_newline(ctx.get(), PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  p.regex_->code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                     translated.size(), PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE,
                                     &error, &offset, ctx.get()));
  if (!p.regex_->code) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(error, message.data(), message.size());
    throw std::runtime_error(
        fmt::format("{}: regex {} does not compile (as PCRE2 {}) at offset {}: {}", where, pattern,
                    translated, offset, reinterpret_cast<const char*>(message.data())));
  }
  pcre2_jit_compile(p.regex_->code.get(), PCRE2_JIT_COMPLETE);  // without JIT: slower, same
  return p;
}

std::vector<std::pair<size_t, size_t>> HfPattern::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> found;
  if (!regex_) {
    for (size_t at = text.find(literal_); at != std::string_view::npos;
         at = text.find(literal_, at + literal_.size())) {
      found.emplace_back(at, at + literal_.size());
    }
    return found;
  }
  pcre2_match_data* match = thread_match_data();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (size_t offset = 0; offset < text.size();) {
    // The caller passes valid UTF-8; checking it at every call would be quadratic.
    int rc = pcre2_match(regex_->code.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK,
                         match, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(regex_->code.get(), subject, text.size(), offset,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    DESTEIN_CHECK_IO(rc >= 0, "{}: matching regex {} failed at byte {} (PCRE2 error {})", where_,
                     regex_->source, offset, rc);
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match);
    DESTEIN_CHECK_IO(
        span[1] > span[0],
        "{}: regex {} matched the empty string at byte {}; Oniguruma's way of going on "
        "after an empty match is not reproduced, so this text is refused",
        where_, regex_->source, span[0]);
    found.emplace_back(span[0], span[1]);
    offset = span[1];
  }
  return found;
}

std::vector<HfPattern::Span> HfPattern::spans(std::string_view text) const {
  if (text.empty()) return {{0, 0, false}};
  std::vector<Span> out;
  size_t prev = 0;
  for (const auto& [begin, end] : find_all(text)) {
    if (prev != begin) out.push_back({prev, begin, false});
    out.push_back({begin, end, true});
    prev = end;
  }
  if (prev != text.size()) out.push_back({prev, text.size(), false});
  return out;
}

}  // namespace destein::text_detail

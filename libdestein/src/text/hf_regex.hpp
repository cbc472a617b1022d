// Private: the patterns of a tokenizer.json (Split pre-tokenizer, Replace normalizer and
// decoder), matched as the Hugging Face library matches them with Oniguruma.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace destein::text_detail {

/// A tokenizer.json pattern: {"String": s} (a literal) or {"Regex": r} (Oniguruma syntax,
/// run by PCRE2 after a translation that keeps Oniguruma's meaning or refuses the pattern).
class HfPattern {
 public:
  /// The literal `text`; `where` names the JSON key in errors. Throws std::runtime_error
  /// on an empty literal (Oniguruma would match it everywhere).
  static HfPattern literal(std::string text, const std::string& where);

  /// The Oniguruma regex `pattern`. Throws std::runtime_error naming `where` and the
  /// construct when the pattern uses one whose meaning PCRE2 does not share (\w, \b, \d,
  /// \h, POSIX classes, class intersection, inline options other than i, ...).
  static HfPattern regex(const std::string& pattern, const std::string& where);

  /// The leftmost non-overlapping matches in `text` (valid UTF-8), as [begin, end) byte
  /// spans. Throws std::runtime_error when the regex matches the empty string, whose
  /// iteration Oniguruma and PCRE2 do not share.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  /// Matches of find_all() and the gaps between them, covering `text` in order (the
  /// `find_matches` of the Hugging Face library); one (0, 0, false) for an empty text.
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans(std::string_view text) const;

  HfPattern(HfPattern&&) noexcept;
  HfPattern& operator=(HfPattern&&) noexcept;
  ~HfPattern();

 private:
  HfPattern();
  struct Compiled;
  std::string literal_;
  std::string where_;
  std::unique_ptr<Compiled> regex_;  // null for a literal
};

/// The translation of an Oniguruma pattern to PCRE2 syntax with the same meaning, exposed
/// for tests: \s becomes \p{White_Space} (Oniguruma's \s; PCRE2's leaves out U+0085), \v a
/// vertical tab, \uHHHH \x{HHHH}. Throws as HfPattern::regex does.
std::string onig_to_pcre2(const std::string& pattern, const std::string& where);

}  // namespace destein::text_detail

#include "text_features.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "check.hpp"
#include "fnv1a.hpp"

namespace destein {

namespace {

constexpr size_t kMaxTokenBytes = 48;

// ---------------------------------------------------------------------------------------
// Text to tokens

bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_alpha_ascii(unsigned char c) { return is_lower(c) || (c >= 'A' && c <= 'Z'); }
bool is_handle_char(unsigned char c) { return is_alpha_ascii(c) || is_digit(c) || c == '_'; }

bool starts_with_ci(std::string_view text, size_t pos, std::string_view prefix) {
  if (text.size() - pos < prefix.size()) return false;
  for (size_t k = 0; k < prefix.size(); ++k) {
    unsigned char c = static_cast<unsigned char>(text[pos + k]);
    if (c >= 'A' && c <= 'Z') c = static_cast<unsigned char>(c + 32);
    if (c != static_cast<unsigned char>(prefix[k])) return false;
  }
  return true;
}

size_t utf8_length(unsigned char lead) {
  if (lead >= 0xF0 && lead <= 0xF7) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;  // stray continuation byte or invalid lead: one byte on its own
}

// Final touches on one raw word: trims masking stars, collapses numbers, undoes leetspeak
// in words that have letters, squeezes long letter runs ("fuuuuck" -> "fuuck").
void finish_token(std::string& raw, std::vector<std::string>& out) {
  size_t begin = 0, end = raw.size();
  while (begin < end && raw[begin] == '*') ++begin;
  while (end > begin && raw[end - 1] == '*') --end;
  if (begin == end) return;
  bool has_letter = false, has_digit = false;
  for (size_t i = begin; i < end; ++i) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    has_letter |= is_lower(c) || c >= 0x80;
    has_digit |= is_digit(c);
  }
  if (!has_letter) {
    if (has_digit) out.emplace_back("0");
    return;
  }
  std::string tok;
  tok.reserve(end - begin);
  for (size_t i = begin; i < end && tok.size() < kMaxTokenBytes; ++i) {
    char c = raw[i];
    switch (c) {
      case '0':
        c = 'o';
        break;
      case '1':
        c = 'i';
        break;
      case '3':
        c = 'e';
        break;
      case '4':
        c = 'a';
        break;
      case '5':
        c = 's';
        break;
      case '7':
        c = 't';
        break;
      case '$':
        c = 's';
        break;
      case '@':
        c = 'a';
        break;
      default:
        break;
    }
    size_t n = tok.size();
    if (n >= 2 && is_lower(static_cast<unsigned char>(c)) && tok[n - 1] == c && tok[n - 2] == c) {
      continue;
    }
    tok += c;
  }
  if (tok == "digit") tok = "0";  // the placeholder of the tokenised Civil Comments files
  out.push_back(std::move(tok));
}

void tokenize(std::string_view text, std::vector<std::string>& out) {
  out.clear();
  std::string cur;
  auto flush = [&]() {
    if (!cur.empty()) finish_token(cur, out);
    cur.clear();
  };
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (cur.empty() && (c == 'h' || c == 'H' || c == 'w' || c == 'W') &&
        (starts_with_ci(text, i, "http://") || starts_with_ci(text, i, "https://") ||
         starts_with_ci(text, i, "www."))) {
      while (i < n && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
      out.emplace_back("url");
      continue;
    }
    if (c == '@' && cur.empty()) {
      if (i + 1 < n && is_handle_char(static_cast<unsigned char>(text[i + 1]))) {
        ++i;
        while (i < n && is_handle_char(static_cast<unsigned char>(text[i]))) ++i;
        out.emplace_back("@user");
      } else {
        ++i;
      }
      continue;
    }
    if (c == '&') {
      // HTML entities of scraped tweets: an apostrophe joins, the rest separate.
      if (starts_with_ci(text, i, "&#39;") || starts_with_ci(text, i, "&apos;") ||
          starts_with_ci(text, i, "&#039;") || starts_with_ci(text, i, "&#8217;")) {
        i = text.find(';', i) + 1;
        continue;
      }
      for (std::string_view e : {"&amp;", "&lt;", "&gt;", "&quot;", "&nbsp;"}) {
        if (starts_with_ci(text, i, e)) {
          i += e.size() - 1;
          break;
        }
      }
      flush();
      ++i;
      continue;
    }
    if (c >= 'A' && c <= 'Z') {
      cur += static_cast<char>(c + 32);
      ++i;
    } else if (is_lower(c) || is_digit(c) || c == '*' || c == '$' || c == '@') {
      cur += static_cast<char>(c);
      ++i;
    } else if (c == '\'' || c == '`') {
      ++i;  // "don't" -> "dont", as in the tokenised training files
    } else if (c == '!' && !cur.empty() && is_lower(static_cast<unsigned char>(cur.back())) &&
               i + 1 < n && is_alpha_ascii(static_cast<unsigned char>(text[i + 1]))) {
      cur += 'i';  // "sh!t"
      ++i;
    } else if (c >= 0x80) {
      size_t len = std::min(utf8_length(c), n - i);
      for (size_t k = 1; k < len; ++k) {
        if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) {
          len = k;
          break;
        }
      }
      std::string_view seq = text.substr(i, len);
      i += len;
      if (seq == "\u2019" || seq == "\u2018" || seq == "\u02BC") continue;  // apostrophes
      if (len == 3 && static_cast<unsigned char>(seq[0]) == 0xE2 &&
          static_cast<unsigned char>(seq[1]) <= 0x81) {
        flush();  // general punctuation: dashes, curly quotes, ellipsis, spaces
        continue;
      }
      if (seq == "\u00A0") {
        flush();
        continue;
      }
      if (len == 4) {  // emoji and other astral symbols stand alone
        flush();
        out.emplace_back(seq);
        continue;
      }
      cur.append(seq);
    } else {
      flush();
      ++i;
    }
  }
  flush();
}

// ---------------------------------------------------------------------------------------
// Hashing

constexpr uint64_t kCombine = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kWordSeed = 0x77u;  // per-token hash
constexpr uint64_t kWordNgramSeed = 0x57000000ULL;
constexpr uint64_t kCharNgramSeed = 0x43000000ULL;

inline uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

inline uint64_t fnv1a(const char* p, size_t n, uint64_t seed) {
  return detail::fnv1a64(p, n, detail::kFnvOffset ^ seed);
}

struct FeatureScratch {
  std::vector<std::string> tokens;
  std::vector<uint64_t> token_hash;
  std::vector<uint64_t> hashes;
  char padded[kMaxTokenBytes + 8];
};

FeatureScratch& thread_scratch() {
  thread_local FeatureScratch scratch;
  return scratch;
}

void extract_into(std::string_view text, const LinearFeatureOptions& o, FeatureScratch& s,
                  SparseFeatures& out) {
  tokenize(text, s.tokens);
  s.hashes.clear();
  s.token_hash.resize(s.tokens.size());
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    s.token_hash[i] = fnv1a(s.tokens[i].data(), s.tokens[i].size(), kWordSeed);
  }
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    uint64_t h = s.token_hash[i];
    for (int k = 0; k < o.word_ngram_max && i + k < s.tokens.size(); ++k) {
      if (k > 0) h = h * kCombine + s.token_hash[i + k];
      s.hashes.push_back(fmix64(h ^ (kWordNgramSeed + static_cast<uint64_t>(k))));
    }
    if (o.char_ngram_max > 0) {
      const std::string& tok = s.tokens[i];
      const size_t len = tok.size() + 2;
      s.padded[0] = '<';
      std::memcpy(s.padded + 1, tok.data(), tok.size());
      s.padded[len - 1] = '>';
      for (int n = o.char_ngram_min; n <= o.char_ngram_max; ++n) {
        if (static_cast<size_t>(n) > len) break;
        const uint64_t seed = kCharNgramSeed + static_cast<uint64_t>(n);
        for (size_t start = 0; start + n <= len; ++start) {
          s.hashes.push_back(fmix64(fnv1a(s.padded + start, n, seed)));
        }
      }
    }
  }
  out.index.clear();
  out.value.clear();
  if (s.hashes.empty()) return;
  std::sort(s.hashes.begin(), s.hashes.end());
  const uint64_t mask = (uint64_t{1} << o.hash_bits) - 1;
  const bool log_tf = o.value == "log_tf";
  double sum_sq = 0.0;
  for (size_t i = 0; i < s.hashes.size();) {
    size_t j = i + 1;
    while (j < s.hashes.size() && s.hashes[j] == s.hashes[i]) ++j;
    const float v = log_tf ? 1.0f + std::log(static_cast<float>(j - i)) : 1.0f;
    const uint64_t h = s.hashes[i];
    out.index.push_back(static_cast<uint32_t>(h & mask));
    out.value.push_back((h >> 63) ? -v : v);
    sum_sq += static_cast<double>(v) * v;
    i = j;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(sum_sq));
  for (float& v : out.value) v *= scale;
}

}  // namespace

namespace detail {

void check_feature_options(const LinearFeatureOptions& o) {
  DESTEIN_CHECK_ARG(o.hash_bits >= 10 && o.hash_bits <= 24,
                    "features.hash_bits: expected 10..24, found {}", o.hash_bits);
  DESTEIN_CHECK_ARG(o.word_ngram_max >= 0 && o.word_ngram_max <= 4,
                    "features.word_ngram_max: expected 0..4, found {}", o.word_ngram_max);
  DESTEIN_CHECK_ARG(
      o.char_ngram_max == 0 ||
          (o.char_ngram_min >= 1 && o.char_ngram_min <= o.char_ngram_max && o.char_ngram_max <= 8),
      "features.char_ngram_min/max: expected 1 <= min <= max <= 8 (or max 0 for "
      "none), found {}..{}",
      o.char_ngram_min, o.char_ngram_max);
  DESTEIN_CHECK_ARG(o.word_ngram_max > 0 || o.char_ngram_max > 0,
                    "features: expected word or character n-grams, found neither");
  DESTEIN_CHECK_ARG(o.value == "binary" || o.value == "log_tf",
                    "features.value: expected 'binary' or 'log_tf', found '{}'", o.value);
}

void extract_features_unchecked(std::string_view text, const LinearFeatureOptions& options,
                                SparseFeatures& out) {
  extract_into(text, options, thread_scratch(), out);
}

}  // namespace detail

std::vector<std::string> scoring_tokens(std::string_view text) {
  std::vector<std::string> out;
  tokenize(text, out);
  return out;
}

void extract_features(std::string_view text, const LinearFeatureOptions& options,
                      SparseFeatures& out) {
  detail::check_feature_options(options);
  extract_into(text, options, thread_scratch(), out);
}

}  // namespace destein

// UTF-8 and file helpers shared by the tokenizers (see text_util.hpp).

#include "text/text_util.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "check.hpp"

namespace destein::text_detail {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// UTF-8 helpers

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the well-formed UTF-8 sequence starting at s[i] (Unicode Table 3-7), or 0 when
// there is none; `bad_len` then gets the length of the maximal ill-formed subpart, which
// is what one U+FFFD replaces (the W3C/WHATWG and Python "replace" convention).
size_t utf8_sequence_length(std::string_view s, size_t i, size_t& bad_len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    need = 2;
  } else if (b0 == 0xED) {
    need = 2, hi = 0x9F;  // U+D800..U+DFFF (surrogates) are not scalar values
  } else if (b0 == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    need = 3;
  } else if (b0 == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    bad_len = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) {
      bad_len = k;
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      bad_len = k;
      return 0;
    }
  }
  return need + 1;
}

bool is_valid_utf8(std::string_view s) {
  size_t bad_len = 0;
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(s, i, bad_len);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Ill-formed input gets U+FFFD, as Python's bytes.decode(errors="replace") and the JS
// TextDecoder give it. That is what the reference pipeline sees when a decoded
// continuation ends inside a multi-byte character and is encoded again, so encode() never
// throws on such text and yields the ids the reference would.
std::string replace_invalid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t bad_len = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence_length(s, i, bad_len);
    if (n > 0) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      append_utf8(out, kReplacementChar);
      i += bad_len;
    }
  }
  return out;
}

// Code points of a string known to be well-formed (vocabulary entries from a JSON parser).
std::vector<char32_t> code_points(std::string_view s) {
  std::vector<char32_t> cps;
  for (size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    size_t n = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    n = std::min(n, s.size() - i);
    char32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    cps.push_back(cp);
    i += n;
  }
  return cps;
}

// ---------------------------------------------------------------------------------------
// File reading

std::string read_file(const fs::path& path, std::string_view what) {
  std::error_code ec;
  DESTEIN_CHECK_IO(fs::is_regular_file(path, ec), "{} '{}' does not exist or is not a file", what,
                   path.string());
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "cannot open {} '{}'", what, path.string());
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

json parse_json_file(const fs::path& path, std::string_view what) {
  const std::string text = read_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(
        fmt::format("malformed JSON in {} '{}': {}", what, path.string(), e.what()));
  }
}

}  // namespace destein::text_detail

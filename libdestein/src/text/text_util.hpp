// Private: UTF-8 and file helpers shared by the tokenizers of this folder.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace destein::text_detail {

/// U+FFFD, what ill-formed UTF-8 becomes.
constexpr char32_t kReplacementChar = 0xFFFD;

/// Appends the UTF-8 encoding of code point `cp`.
void append_utf8(std::string& out, char32_t cp);

/// Length of the well-formed UTF-8 sequence at s[i], or 0 with `bad_len` set to the length
/// of the maximal ill-formed subpart (what one U+FFFD replaces).
size_t utf8_sequence_length(std::string_view s, size_t i, size_t& bad_len);

bool is_valid_utf8(std::string_view s);

/// `s` with each maximal ill-formed subpart replaced by U+FFFD (Python's "replace", JS
/// TextDecoder, Rust's from_utf8_lossy).
std::string replace_invalid_utf8(std::string_view s);

/// Code points of a string known to be well-formed.
std::vector<char32_t> code_points(std::string_view s);

/// The bytes of file `path`; `what` names it in errors ("tokenizer file").
std::string read_file(const std::filesystem::path& path, std::string_view what);

/// The JSON of file `path`, or std::runtime_error naming the file and the parse error.
nlohmann::json parse_json_file(const std::filesystem::path& path, std::string_view what);

}  // namespace destein::text_detail

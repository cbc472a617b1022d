#pragma once
/// Small file helpers the commands share: whole-file JSON reads whose errors name the
/// file, atomic text writes, and the first difference between two settings objects (what
/// resume checks report).

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace destein {

/// Parses a whole file as JSON. Throws std::runtime_error naming the file when it cannot be
/// opened or is not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

/// Write-then-rename, the one way the library replaces a file: `write` fills `path` + ".tmp",
/// which is then renamed onto `path`, so a crash or an error never leaves a half-written
/// file under the final name. When `write` throws, or the rename fails, the temporary file
/// is removed and the error goes on (the rename's as std::runtime_error naming both files).
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(const std::filesystem::path& tmp)>& write);

/// Writes `text` to `path` through write_file_atomically(). Throws std::runtime_error
/// naming the file on failure.
void write_text_file(const std::filesystem::path& path, const std::string& text);

/// FNV-1a 64 of a file's bytes as 16 hex digits: identifies a file a cache or a run was
/// made from. Throws std::runtime_error naming the file when it cannot be read.
std::string file_fnv1a64(const std::filesystem::path& path);

/// The first key (nested keys joined by dots) whose value differs between `now` and
/// `before`, as "key: <now> now, <before> before"; nullopt when every key of `now` has the
/// same value in `before`. Keys only `before` has are ignored.
std::optional<std::string> first_json_difference(const nlohmann::json& now,
                                                 const nlohmann::json& before);

}  // namespace destein

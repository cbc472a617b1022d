#pragma once
/// JSON Lines: one JSON value per line. The reader says `file:line` in every error; the
/// writer checks every write.
///
/// Example:
///
///     destein::JsonlReader in("prompts.jsonl");
///     nlohmann::json value;
///     while (in.next(value)) {
///       std::string text = value.at("text");  // use in.where() in messages of your own
///     }

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace destein {

struct JsonlOptions {
  /// true: a line that is not valid JSON is skipped and counted (skipped()); false: it is
  /// an error.
  bool skip_malformed = false;
};

/// Reads a JSON Lines file line by line. Blank lines are ignored; a trailing '\r' is
/// dropped (CRLF files). Throws std::runtime_error naming the file (and line) when the
/// file cannot be read or a line is not JSON.
class JsonlReader {
 public:
  explicit JsonlReader(const std::filesystem::path& path, JsonlOptions options = {});

  /// The next value into `value`; false at the end of the file.
  bool next(nlohmann::json& value);

  /// 1-based line of the value last returned (0 before the first).
  int64_t line() const { return value_line_; }
  /// Malformed lines skipped so far (skip_malformed only).
  int64_t skipped() const { return skipped_; }
  /// "path:line" of the value last returned, for messages about its content.
  std::string where() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  JsonlOptions options_;
  std::ifstream in_;
  std::string buffer_;
  int64_t line_ = 0;
  int64_t value_line_ = 0;
  int64_t skipped_ = 0;
};

/// Writes one JSON value per line. Invalid UTF-8 in strings is written as U+FFFD rather
/// than failing. Throws std::runtime_error naming the file when it cannot be created or
/// written (close() reports a failed flush).
class JsonlWriter {
 public:
  explicit JsonlWriter(const std::filesystem::path& path);
  void write(const nlohmann::json& value);
  void close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace destein

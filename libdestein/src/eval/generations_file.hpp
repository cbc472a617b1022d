// Private: one track's generations file as the harness resumes and extends it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace destein {

/// A generations file open for appending. Opening reads the prompt indices already there
/// and cuts off a partial last line (a run killed mid-write), so that a resumed run adds
/// each missing prompt exactly once.
class GenerationsFile {
 public:
  /// Creates the file's folder, reads and repairs the file, opens it for appending.
  /// Throws std::runtime_error naming file:line for a corrupt line before the last one,
  /// or naming the file when it cannot be opened.
  explicit GenerationsFile(std::filesystem::path path);

  const std::filesystem::path& path() const { return path_; }
  /// The prompt_index of every complete line found on opening.
  const std::set<int64_t>& done() const { return done_; }
  /// Bytes of the partial last line removed on opening (0: none).
  int64_t truncated_bytes() const { return truncated_bytes_; }

  /// Appends whole lines and flushes them. Throws std::runtime_error naming the file when
  /// the write fails (the lines written before stay whole).
  void append(const std::string& lines);

 private:
  std::filesystem::path path_;
  std::set<int64_t> done_;
  int64_t truncated_bytes_ = 0;
  std::ofstream out_;
};

}  // namespace destein

#include "eval/generations_file.hpp"

#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "check.hpp"

namespace destein {

namespace {

// Reads the prompt indices already in `path`; cuts off a partial last line (a run killed
// mid-write) and returns how many bytes it removed.
std::set<int64_t> done_prompts(const std::filesystem::path& path, int64_t* truncated) {
  std::set<int64_t> done;
  *truncated = 0;
  if (!std::filesystem::exists(path)) return done;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  int64_t offset = 0, good_end = 0, line_no = 0;
  std::vector<std::pair<int64_t, std::string>> bad;  // (line, error)
  while (std::getline(in, line)) {
    ++line_no;
    const bool complete = !in.eof();
    offset += static_cast<int64_t>(line.size()) + (complete ? 1 : 0);
    if (line.empty()) {
      if (complete) good_end = offset;
      continue;
    }
    try {
      auto j = nlohmann::json::parse(line);
      if (!complete) throw std::runtime_error("no newline: the write was cut");
      DESTEIN_CHECK_IO(j.contains("prompt_index") && j["prompt_index"].is_number_integer(),
                       "no prompt_index");
      if (!bad.empty()) break;
      done.insert(j["prompt_index"].get<int64_t>());
      good_end = offset;
    } catch (const std::exception& e) {
      bad.emplace_back(line_no, e.what());
    }
  }
  if (!bad.empty()) {
    // Only the very last line may be damaged; anything earlier is real corruption.
    DESTEIN_CHECK_IO(
        bad.size() == 1 && bad[0].first == line_no,
        "{}:{}: corrupt line in an existing generations file ({}); move the file away or fix it",
        path.string(), bad[0].first, bad[0].second);
    in.close();
    *truncated = static_cast<int64_t>(std::filesystem::file_size(path)) - good_end;
    std::filesystem::resize_file(path, static_cast<uintmax_t>(good_end));
  }
  return done;
}

}  // namespace

GenerationsFile::GenerationsFile(std::filesystem::path path) : path_(std::move(path)) {
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
  done_ = done_prompts(path_, &truncated_bytes_);
  out_.open(path_, std::ios::binary | std::ios::app);
  DESTEIN_CHECK_IO(out_.good(), "{}: cannot open for appending", path_.string());
}

void GenerationsFile::append(const std::string& lines) {
  out_ << lines;
  out_.flush();
  DESTEIN_CHECK_IO(out_.good(),
                   "{}: write failed (disk full?); the lines before this batch are kept",
                   path_.string());
}

}  // namespace destein

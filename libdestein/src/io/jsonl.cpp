#include "io/jsonl.hpp"

#include "check.hpp"

namespace destein {

namespace {

bool is_blank(const std::string& s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

}  // namespace

JsonlReader::JsonlReader(const std::filesystem::path& path, JsonlOptions options)
    : path_(path.string()), options_(options), in_(path, std::ios::binary) {
  DESTEIN_CHECK_IO(!std::filesystem::is_directory(path),
                   "cannot read '{}' as JSON Lines: it is a folder", path_);
  DESTEIN_CHECK_IO(in_.good(), "cannot open '{}' for reading", path_);
}

bool JsonlReader::next(nlohmann::json& value) {
  while (std::getline(in_, buffer_)) {
    ++line_;
    if (!buffer_.empty() && buffer_.back() == '\r') buffer_.pop_back();
    if (is_blank(buffer_)) continue;
    try {
      value = nlohmann::json::parse(buffer_);
    } catch (const nlohmann::json::parse_error& e) {
      if (options_.skip_malformed) {
        ++skipped_;
        continue;
      }
      std::string head = buffer_.size() > 60 ? buffer_.substr(0, 60) + "..." : buffer_;
      DESTEIN_CHECK_IO(false, "{}:{}: expected one JSON value per line, found '{}' ({})", path_,
                       line_, head, e.what());
    }
    value_line_ = line_;
    return true;
  }
  DESTEIN_CHECK_IO(!in_.bad(), "{}:{}: read error", path_, line_ + 1);
  return false;
}

std::string JsonlReader::where() const { return fmt::format("{}:{}", path_, value_line_); }

JsonlWriter::JsonlWriter(const std::filesystem::path& path)
    : path_(path.string()), out_(path, std::ios::binary | std::ios::trunc) {
  DESTEIN_CHECK_IO(out_.good(), "cannot create '{}' for writing (does its folder exist?)", path_);
}

void JsonlWriter::write(const nlohmann::json& value) {
  out_ << value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  DESTEIN_CHECK_IO(out_.good(), "error while writing '{}' (disk full?)", path_);
}

void JsonlWriter::close() {
  if (!out_.is_open()) return;
  out_.flush();
  DESTEIN_CHECK_IO(out_.good(), "error while writing '{}' (disk full?)", path_);
  out_.close();
}

}  // namespace destein

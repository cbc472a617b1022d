#include "io/csv.hpp"

#include <fstream>
#include <sstream>

#include "check.hpp"

namespace destein {

namespace {

std::string printable(char c) {
  if (c == '\r') return "\\r";
  if (c == '\t') return "\\t";
  if (static_cast<unsigned char>(c) < 0x20) return fmt::format("\\x{:02x}", c);
  return std::string(1, c);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += "'" + item + "'";
  }
  return out;
}

}  // namespace

CsvReader::CsvReader(std::string text, std::string source, CsvOptions options)
    : text_(std::move(text)), source_(std::move(source)), options_(options) {
  DESTEIN_CHECK_ARG(
      options_.separator != '"' && options_.separator != '\n' && options_.separator != '\r',
      "CSV separator must not be a quote or a line end, found '{}'", printable(options_.separator));
  if (text_.rfind("\xEF\xBB\xBF", 0) == 0) pos_ = 3;
}

CsvReader CsvReader::open(const std::filesystem::path& path, CsvOptions options) {
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  DESTEIN_CHECK_IO(!in.bad(), "error while reading '{}'", path.string());
  return CsvReader(buffer.str(), path.string(), options);
}

CsvReader CsvReader::from_string(std::string text, std::string source, CsvOptions options) {
  return CsvReader(std::move(text), std::move(source), options);
}

bool CsvReader::next(CsvRecord& record) {
  record.fields.clear();
  const size_t size = text_.size();
  const char sep = options_.separator;
  if (options_.skip_empty_lines) {
    while (pos_ < size) {
      if (text_[pos_] == '\n') {
        ++pos_;
      } else if (text_[pos_] == '\r' && pos_ + 1 < size && text_[pos_ + 1] == '\n') {
        pos_ += 2;
      } else {
        break;
      }
      ++line_;
    }
  }
  if (pos_ >= size) return false;
  record.line = line_;

  // Returns true when a line end (or the input's end) closed the record.
  auto end_of_field = [&]() -> bool {
    if (pos_ >= size) return true;
    char c = text_[pos_];
    if (c == sep) {
      ++pos_;
      return false;
    }
    if (c == '\n') {
      ++pos_;
      ++line_;
      return true;
    }
    if (c == '\r' && pos_ + 1 < size && text_[pos_ + 1] == '\n') {
      pos_ += 2;
      ++line_;
      return true;
    }
    return false;  // not reached for well-formed input: callers stop only at these
  };

  std::string field;
  while (true) {
    field.clear();
    if (options_.quoting && pos_ < size && text_[pos_] == '"') {
      const int64_t start_line = line_;
      ++pos_;
      while (true) {
        DESTEIN_CHECK_IO(pos_ < size,
                         "{}:{}: quoted field never closed (expected a closing '\"' before the "
                         "end of the file)",
                         source_, start_line);
        char c = text_[pos_];
        if (c == '"') {
          if (pos_ + 1 < size && text_[pos_ + 1] == '"') {
            field += '"';
            pos_ += 2;
            continue;
          }
          ++pos_;
          break;
        }
        if (c == '\n') ++line_;
        field += c;
        ++pos_;
      }
      if (pos_ < size) {
        char c = text_[pos_];
        bool ok =
            c == sep || c == '\n' || (c == '\r' && pos_ + 1 < size && text_[pos_ + 1] == '\n');
        DESTEIN_CHECK_IO(ok,
                         "{}:{}: expected a separator or the end of the line after a closing "
                         "quote, found '{}' (a quote inside a quoted field must be doubled)",
                         source_, line_, printable(c));
      }
    } else {
      size_t start = pos_;
      while (pos_ < size) {
        char c = text_[pos_];
        if (c == sep || c == '\n' || (c == '\r' && pos_ + 1 < size && text_[pos_ + 1] == '\n')) {
          break;
        }
        DESTEIN_CHECK_IO(!(options_.quoting && c == '"'),
                         "{}:{}: quote inside an unquoted field (expected the whole field in "
                         "quotes with inner quotes doubled; read files written without quoting "
                         "with quoting off)",
                         source_, line_);
        ++pos_;
      }
      field.assign(text_, start, pos_ - start);
    }
    record.fields.push_back(field);
    if (end_of_field()) return true;
  }
}

const std::vector<std::string>& CsvReader::read_header() {
  CsvRecord record;
  DESTEIN_CHECK_IO(next(record), "{}: expected a header line, found an empty file", source_);
  header_ = std::move(record.fields);
  return header_;
}

size_t CsvReader::column(std::string_view name) const {
  for (size_t i = 0; i < header_.size(); ++i) {
    if (header_[i] == name) return i;
  }
  DESTEIN_CHECK_IO(!header_.empty(), "{}: column '{}' asked for before read_header()", source_,
                   name);
  DESTEIN_CHECK_IO(false, "{}: expected a column '{}' in the header, found {}", source_, name,
                   join(header_));
  return 0;
}

void CsvReader::require_fields(const CsvRecord& record, size_t count) const {
  if (count == 0) count = header_.size();
  DESTEIN_CHECK_IO(record.fields.size() >= count, "{}:{}: expected {} fields, found {}", source_,
                   record.line, count, record.fields.size());
}

std::string CsvReader::where(const CsvRecord& record) const {
  return fmt::format("{}:{}", source_, record.line);
}

std::vector<CsvRecord> read_csv(const std::filesystem::path& path, CsvOptions options) {
  auto reader = CsvReader::open(path, options);
  std::vector<CsvRecord> out;
  CsvRecord record;
  while (reader.next(record)) out.push_back(record);
  return out;
}

}  // namespace destein

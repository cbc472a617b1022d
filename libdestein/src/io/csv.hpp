#pragma once
/// RFC 4180 reader for CSV and TSV files: a configurable separator, quoted fields that may
/// hold separators and newlines, `""` for a literal quote inside a quoted field, LF or CRLF
/// line ends, an optional UTF-8 byte-order mark. Every record carries the line it starts
/// on, so that callers can say where a bad value is.
///
/// Example (ParaDetox, tab-separated with quoting):
///
///     destein::CsvOptions tsv;
///     tsv.separator = '\t';
///     auto csv = destein::CsvReader::open("paradetox.tsv", tsv);
///     auto header = csv.read_header();
///     size_t toxic = csv.column("toxic");
///     destein::CsvRecord rec;
///     while (csv.next(rec)) use(rec.fields[toxic]);

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace destein {

/// How a file is split into records and fields.
struct CsvOptions {
  char separator = ',';
  /// false: quotes are ordinary characters and every line end ends a record (files that
  /// were written without quoting, such as OLID).
  bool quoting = true;
  /// Lines holding nothing at all are skipped instead of read as one empty field.
  bool skip_empty_lines = true;
};

/// One record: its fields, unquoted, and the 1-based line on which it starts.
struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;
};

/// Reads records one at a time from a file held in memory. Throws std::runtime_error,
/// naming the source and line, on an unterminated quoted field, on text between a closing
/// quote and the next separator, or on a quote inside an unquoted field.
class CsvReader {
 public:
  /// Reads `path` whole. Throws std::runtime_error naming the path when it cannot be read.
  static CsvReader open(const std::filesystem::path& path, CsvOptions options = {});
  /// Parses `text`; `source` names it in error messages.
  static CsvReader from_string(std::string text, std::string source, CsvOptions options = {});

  /// The next record into `record`; false at the end of the input.
  bool next(CsvRecord& record);

  /// Reads the next record as the header, remembered for column(). Throws
  /// std::runtime_error when the input is empty.
  const std::vector<std::string>& read_header();

  /// Index of header column `name`. Throws std::runtime_error naming the source, the
  /// column and the columns found.
  size_t column(std::string_view name) const;

  /// Throws std::runtime_error naming source and line unless `record` has at least `count`
  /// fields (the header's size when count is 0).
  void require_fields(const CsvRecord& record, size_t count = 0) const;

  /// "source:line", for messages about a record's values.
  std::string where(const CsvRecord& record) const;

  const std::string& source() const { return source_; }

 private:
  CsvReader(std::string text, std::string source, CsvOptions options);

  std::string text_;
  std::string source_;
  CsvOptions options_;
  size_t pos_ = 0;
  int64_t line_ = 1;
  std::vector<std::string> header_;
};

/// All records of `path` (header included, as the first record).
std::vector<CsvRecord> read_csv(const std::filesystem::path& path, CsvOptions options = {});

}  // namespace destein

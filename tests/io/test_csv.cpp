// CSV/TSV reader: RFC 4180 quoting, line numbers, CRLF, errors that say where.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "io/csv.hpp"

using Catch::Matchers::Contains;
using destein::CsvOptions;
using destein::CsvReader;
using destein::CsvRecord;

namespace {

std::vector<CsvRecord> parse(const std::string& text, CsvOptions options = {}) {
  auto reader = CsvReader::from_string(text, "mem.csv", options);
  std::vector<CsvRecord> out;
  CsvRecord rec;
  while (reader.next(rec)) out.push_back(rec);
  return out;
}

std::filesystem::path data_dir() {
  if (const char* env = std::getenv("DESTEIN_DATA")) return env;
  return DESTEIN_DEFAULT_DATA_DIR;
}

}  // namespace

TEST_CASE("csv: plain fields and line numbers", "[csv]") {
  auto recs = parse("a,b,c\n1,2,3\n\n4,,6\n");
  REQUIRE(recs.size() == 3);
  CHECK(recs[0].fields == std::vector<std::string>{"a", "b", "c"});
  CHECK(recs[0].line == 1);
  CHECK(recs[1].fields == std::vector<std::string>{"1", "2", "3"});
  CHECK(recs[1].line == 2);
  CHECK(recs[2].fields == std::vector<std::string>{"4", "", "6"});
  CHECK(recs[2].line == 4);  // the blank line 3 is skipped but counted
}

TEST_CASE("csv: quoted fields hold separators, newlines and doubled quotes", "[csv]") {
  auto recs = parse("id,text\n1,\"hello, \"\"world\"\"\nsecond line\"\n2,\"\"\n3,last");
  REQUIRE(recs.size() == 4);
  CHECK(recs[1].fields[1] == "hello, \"world\"\nsecond line");
  CHECK(recs[1].line == 2);
  CHECK(recs[2].fields == std::vector<std::string>{"2", ""});
  CHECK(recs[2].line == 4);  // the quoted newline moved the count on
  CHECK(recs[3].fields == std::vector<std::string>{"3", "last"});  // no final newline
  CHECK(recs[3].line == 5);
}

TEST_CASE("csv: CRLF line ends, trailing separator, BOM", "[csv]") {
  auto recs = parse("\xEF\xBB\xBFx,y\r\n\"a\r\nb\",c,\r\n");
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].fields == std::vector<std::string>{"x", "y"});
  CHECK(recs[1].fields == std::vector<std::string>{"a\r\nb", "c", ""});
  CHECK(recs[1].line == 2);
}

TEST_CASE("csv: tab separator and quoting off", "[csv]") {
  CsvOptions tsv;
  tsv.separator = '\t';
  auto recs = parse("a\tb\n\"x,y\"\t\"q\"\"\"\n", tsv);
  REQUIRE(recs.size() == 2);
  CHECK(recs[1].fields == std::vector<std::string>{"x,y", "q\""});

  tsv.quoting = false;
  auto raw = parse("id\ttweet\r\n1\t\"quoted\"\" as is\r\n", tsv);
  REQUIRE(raw.size() == 2);
  CHECK(raw[1].fields == std::vector<std::string>{"1", "\"quoted\"\" as is"});
}

TEST_CASE("csv: keeps empty lines as records when asked", "[csv]") {
  CsvOptions keep;
  keep.skip_empty_lines = false;
  auto recs = parse("a\n\nb\n", keep);
  REQUIRE(recs.size() == 3);
  CHECK(recs[1].fields == std::vector<std::string>{""});
}

TEST_CASE("csv: malformed input is an error naming source and line", "[csv]") {
  CHECK_THROWS_WITH(parse("a,b\n1,\"open\nnever closed\n"),
                    Contains("mem.csv:2") && Contains("never closed"));
  CHECK_THROWS_WITH(parse("a,b\n\"x\"y,2\n"),
                    Contains("mem.csv:2") && Contains("after a closing quote, found 'y'"));
  CHECK_THROWS_WITH(parse("a,b\n\n1,x\"y\n"),
                    Contains("mem.csv:3") && Contains("quote inside an unquoted field"));
  CsvOptions bad;
  bad.separator = '"';
  CHECK_THROWS_AS(parse("a", bad), std::invalid_argument);
}

TEST_CASE("csv: header columns and field counts", "[csv]") {
  auto reader = CsvReader::from_string("name,label\nfoo,1\nbar\n", "t.csv");
  reader.read_header();
  CHECK(reader.column("label") == 1);
  CHECK_THROWS_WITH(reader.column("toxic"),
                    Contains("t.csv") && Contains("'toxic'") && Contains("'name', 'label'"));
  CsvRecord rec;
  REQUIRE(reader.next(rec));
  CHECK_NOTHROW(reader.require_fields(rec));
  REQUIRE(reader.next(rec));
  CHECK_THROWS_WITH(reader.require_fields(rec), Contains("t.csv:3: expected 2 fields, found 1"));
  auto empty = CsvReader::from_string("", "e.csv");
  CHECK_THROWS_WITH(empty.read_header(), Contains("e.csv") && Contains("empty"));
  CHECK_THROWS_WITH(CsvReader::open("/nonexistent/x.csv"), Contains("/nonexistent/x.csv"));
}

TEST_CASE("csv: ParaDetox parses into the documented row count", "[csv][data]") {
  auto path = data_dir() / "paradetox/paradetox.tsv";
  if (!std::filesystem::exists(path)) {
    WARN("data not found, skipped: " << path);
    return;
  }
  CsvOptions tsv;
  tsv.separator = '\t';
  auto reader = CsvReader::open(path, tsv);
  reader.read_header();
  CsvRecord rec;
  int64_t rows = 0, pairs = 0, last_line = 0;
  while (reader.next(rec)) {
    REQUIRE(rec.fields.size() == 4);
    ++rows;
    for (int k = 1; k < 4; ++k) pairs += !rec.fields[k].empty();
    last_line = rec.line;
  }
  // shared/data/README.md: 11,927 rows on 11,936 physical lines, 19,743 pairs.
  CHECK(rows == 11927);
  CHECK(pairs == 19743);
  CHECK(last_line <= 11936);
  CHECK(last_line > 11927);
}

TEST_CASE("csv: cannot-rewrite comments keep one pair of quotes after parsing", "[csv][data]") {
  auto path = data_dir() / "paradetox/paradetox_cannot_rewrite.tsv";
  if (!std::filesystem::exists(path)) {
    WARN("data not found, skipped: " << path);
    return;
  }
  CsvOptions tsv;
  tsv.separator = '\t';
  auto reader = CsvReader::open(path, tsv);
  reader.read_header();
  size_t text = reader.column("INPUT:toxic_comment");
  CsvRecord rec;
  int64_t rows = 0, quoted = 0;
  while (reader.next(rec)) {
    ++rows;
    const auto& t = rec.fields.at(text);
    quoted += t.size() >= 2 && t.front() == '"' && t.back() == '"';
  }
  CHECK(rows == 12059);    // README
  CHECK(quoted == 12016);  // README
}

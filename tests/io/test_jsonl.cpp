// JSON Lines reader and writer: file:line in every error, skipping malformed lines.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/jsonl.hpp"
#include "train/scorer_data.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path write_temp(const std::string& name, const std::string& content) {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "jsonl_tmp";
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

}  // namespace

TEST_CASE("jsonl: reads values with their line numbers", "[jsonl]") {
  auto p = write_temp("ok.jsonl", "{\"a\": 1}\r\n\n  \n[1, 2]\n\"s\"");
  destein::JsonlReader in(p);
  nlohmann::json v;
  REQUIRE(in.next(v));
  CHECK(v["a"] == 1);
  CHECK(in.line() == 1);
  REQUIRE(in.next(v));
  CHECK(v == nlohmann::json::array({1, 2}));
  CHECK(in.line() == 4);
  CHECK(in.where() == p.string() + ":4");
  REQUIRE(in.next(v));
  CHECK(v == "s");
  CHECK_FALSE(in.next(v));
}

TEST_CASE("jsonl: a malformed line is an error with file:line, or skipped and counted", "[jsonl]") {
  auto p = write_temp("bad.jsonl", "{\"a\": 1}\n{\"a\": \n{\"a\": 3}\nnot json\n");
  {
    destein::JsonlReader in(p);
    nlohmann::json v;
    REQUIRE(in.next(v));
    CHECK_THROWS_WITH(in.next(v), Contains(p.string() + ":2") && Contains("expected one JSON"));
  }
  destein::JsonlOptions skip;
  skip.skip_malformed = true;
  destein::JsonlReader in(p, skip);
  nlohmann::json v;
  int n = 0;
  while (in.next(v)) ++n;
  CHECK(n == 2);
  CHECK(in.skipped() == 2);
  CHECK_THROWS_WITH(destein::JsonlReader("/nonexistent/in.jsonl"),
                    Contains("/nonexistent/in.jsonl"));
}

TEST_CASE("jsonl: writer round trip and invalid UTF-8 becomes U+FFFD", "[jsonl]") {
  fs::path p = fs::path(DESTEIN_TEST_BINARY_DIR) / "jsonl_tmp" / "out.jsonl";
  fs::create_directories(p.parent_path());
  {
    destein::JsonlWriter out(p);
    out.write({{"text", "caf\xC3\xA9"}, {"toxicity", 0.25}});
    out.write({{"text", std::string("bad \xFF byte")}});
    out.close();
  }
  destein::JsonlReader in(p);
  nlohmann::json v;
  REQUIRE(in.next(v));
  CHECK(v["text"] == "caf\xC3\xA9");
  CHECK(v["toxicity"] == 0.25);
  REQUIRE(in.next(v));
  CHECK(v["text"] == "bad \xEF\xBF\xBD byte");
  CHECK_THROWS_WITH(destein::JsonlWriter("/nonexistent/dir/out.jsonl"),
                    Contains("/nonexistent/dir/out.jsonl"));
}

TEST_CASE("jsonl: record_text accepts {text} and the RTP {prompt: {text}}", "[jsonl]") {
  using nlohmann::json;
  CHECK(destein::record_text(json{{"text", "a"}}, "f:1") == "a");
  CHECK(destein::record_text(json{{"prompt", {{"text", "b"}, {"toxicity", 0.1}}}}, "f:2") == "b");
  CHECK_THROWS_WITH(destein::record_text(json{{"text", 3}}, "f:3"),
                    Contains("f:3") && Contains("'text'") && Contains("number"));
  CHECK_THROWS_WITH(destein::record_text(json{{"prompt", {{"toxicity", 1}}}}, "f:4"),
                    Contains("f:4") && Contains("prompt.text"));
  CHECK_THROWS_WITH(destein::record_text(json{{"body", "x"}}, "f:5"),
                    Contains("f:5") && Contains("'text' or 'prompt.text'"));
  CHECK_THROWS_WITH(destein::record_text(json::array(), "f:6"), Contains("f:6"));
}

TEST_CASE("jsonl: sanitize_utf8 replaces only invalid sequences", "[jsonl]") {
  CHECK(destein::sanitize_utf8("ok \xC3\xA9 \xF0\x9F\x98\x82") == "ok \xC3\xA9 \xF0\x9F\x98\x82");
  CHECK(destein::sanitize_utf8("cut \xF0\x9F\x98") == "cut \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(destein::sanitize_utf8("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  CHECK(destein::sanitize_utf8("\xED\xA0\x80") ==
        "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

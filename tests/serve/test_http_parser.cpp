// The HTTP/1.1 request reader of `destein serve` on hand-written requests (RFC 9112): every
// split of the bytes gives the same request, every limit is a status before the bytes past
// it are kept, and ambiguous framing is refused.
#include <catch2/catch.hpp>

#include "serve/http_parser.hpp"

using namespace destein::http;
using Catch::Matchers::Contains;

namespace {

// Feeds `bytes` in pieces of `step`; returns the requests read and what is left over.
std::vector<HttpRequest> read_all(const std::string& bytes, size_t step, HttpLimits limits = {},
                                  bool* started = nullptr) {
  HttpRequestParser parser(limits);
  std::vector<HttpRequest> out;
  std::string buffer;
  size_t at = 0;
  while (true) {
    if (at < bytes.size()) {
      buffer.append(bytes, at, step);
      at += step;
    }
    size_t used;
    do {
      used = parser.feed(buffer.data(), buffer.size());
      buffer.erase(0, used);
      if (parser.done()) {
        out.push_back(parser.request());
        parser.reset();
      }
    } while (used > 0 && !buffer.empty());
    if (at >= bytes.size() && (buffer.empty() || used == 0)) break;
  }
  if (started) *started = parser.started();
  return out;
}

int status_of(const std::string& bytes, HttpLimits limits = {}) {
  try {
    read_all(bytes, 7, limits);
  } catch (const HttpError& e) {
    return e.status();
  }
  return 0;
}

}  // namespace

TEST_CASE("http parser: Content-Length, chunked and pipelined requests, however split",
          "[serve][http]") {
  const std::string stream =
      "\r\nPOST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nAuthorization: "
      "Bearer k\r\n\r\nhello"
      "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nConnection: "
      "close\r\n\r\n"
      "3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
      "GET /health HTTP/1.0\r\n\r\n"
      "GET /hea";
  for (size_t step : {size_t{1}, size_t{2}, size_t{13}, stream.size()}) {
    INFO("pieces of " << step);
    bool started = false;
    const auto reqs = read_all(stream, step, {}, &started);
    REQUIRE(reqs.size() == 3);
    CHECK(reqs[0].method == "POST");
    CHECK(reqs[0].target == "/v1/completions?x=1");
    CHECK(reqs[0].path == "/v1/completions");
    CHECK(reqs[0].body == "hello");
    CHECK(reqs[0].keep_alive);
    REQUIRE(reqs[0].header("authorization"));
    CHECK(*reqs[0].header("authorization") == "Bearer k");
    CHECK(reqs[1].chunked);
    CHECK(reqs[1].body == "abc0123456789");
    CHECK(!reqs[1].keep_alive);
    CHECK(reqs[2].minor_version == 0);
    CHECK(!reqs[2].keep_alive);
    CHECK(reqs[2].body.empty());
    CHECK(started);  // the start of a fourth request waits for its bytes
  }
}

TEST_CASE("http parser: the head is complete before the body is read", "[serve][http]") {
  HttpRequestParser parser;
  const std::string head =
      "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
  const std::string bytes = head + "5\r\nhello\r\n";
  const size_t used = parser.feed(bytes.data(), bytes.size());
  CHECK(used == head.size());  // it stops after the head: the caller judges it first
  CHECK(parser.head_done());
  CHECK(!parser.done());
  CHECK(parser.request().expect_continue);
}

TEST_CASE("http parser: limits and ambiguous framing are statuses", "[serve][http]") {
  HttpLimits small;
  small.max_body_bytes = 10;
  small.max_head_bytes = 200;
  small.max_headers = 3;
  const std::string post = "POST / HTTP/1.1\r\n";
  CHECK(status_of(post + "Content-Length: 11\r\n\r\n", small) == 413);
  CHECK(status_of(post + "Content-Length: 10\r\n\r\n0123456789", small) == 0);
  // Chunked: 413 as soon as the sizes pass the limit, before the data arrives.
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\n6\r\n", small) ==
        0);  // incomplete, not refused
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n", small) == 413);
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFF\r\n", small) == 413);
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n", small) == 400);
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", small) == 400);
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", small) == 400);
  // A head that never ends: 431 once it passes the limit, without waiting for its end.
  CHECK(status_of(post + "X: " + std::string(300, 'a'), small) == 431);
  CHECK(status_of(post + "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", small) == 431);
  CHECK(status_of(post + "Transfer-Encoding: chunked\r\n\r\n0\r\nT: " + std::string(300, 'a'),
                  small) == 431);
  // Smuggling: two framings, or two lengths, are refused.
  CHECK(status_of(post + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n") == 400);
  CHECK(status_of(post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\n") == 400);
  CHECK(status_of(post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc") == 0);
  CHECK(status_of(post + "Content-Length: -3\r\n\r\n") == 400);
  CHECK(status_of(post + "Content-Length: 99999999999999999999\r\n\r\n") == 400);
  CHECK(status_of(post + "Transfer-Encoding: gzip, chunked\r\n\r\n") == 501);
  CHECK(status_of(post + "X: a\r\n b\r\n\r\n") == 400);  // obsolete line folding
  CHECK(status_of(post + "X a\r\n\r\n") == 400);
  CHECK(status_of(post + "Expect: 200-ok\r\n\r\n") == 417);
  CHECK(status_of("GET / HTTP/2.0\r\n\r\n") == 505);
  CHECK(status_of("GET  / HTTP/1.1\r\n\r\n") == 400);
  CHECK(status_of("GET http://a/ HTTP/1.1\r\n\r\n") == 400);
  CHECK(status_of("G(T / HTTP/1.1\r\n\r\n") == 400);
  CHECK(
      read_all("GET / HTTP/1.1\n\n", 3).empty());  // bare LF ends no head: it waits, then times out
}

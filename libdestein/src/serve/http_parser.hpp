#pragma once
// The HTTP/1.1 request reader of `destein serve` (LibTorch-free, no sockets): bytes in, one
// request at a time out, with every limit enforced while the bytes arrive. A head larger
// than max_head_bytes is a 431 before the rest is read; a body past max_body_bytes a 413,
// chunked or not, before it is buffered; a request whose head is complete can be answered
// (401, 405) before any of its body is read. Bytes after a request stay in the caller's
// buffer for the next one (pipelining).
//
//   HttpRequestParser parser(limits);
//   size_t used = parser.feed(buffer.data(), buffer.size());  // throws HttpError
//   buffer.erase(0, used);
//   if (parser.head_done()) ... check parser.request() headers ...
//   if (parser.done()) { handle(parser.request()); parser.reset(); }

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace destein::http {

/// A request the reader cannot accept: the status to answer with and why.
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct HttpLimits {
  size_t max_head_bytes = 16 * 1024;  ///< request line + headers (+ a chunked body's trailers)
  size_t max_headers = 100;
  size_t max_body_bytes = 1 << 20;  ///< after chunked decoding
};

struct HttpRequest {
  std::string method;  ///< as sent (methods are case-sensitive)
  std::string target;  ///< the request target, e.g. /v1/models?x=1
  std::string path;    ///< the target before '?'
  int minor_version = 1;
  std::vector<std::pair<std::string, std::string>> headers;  ///< names lower-cased, values trimmed
  std::string body;
  bool keep_alive = true;  ///< HTTP/1.1 without "Connection: close", or 1.0 with keep-alive
  bool expect_continue =
      false;  ///< "Expect: 100-continue": the client waits for a 100 before its body
  bool chunked = false;
  size_t content_length = 0;

  /// The first header named `lower_name` (lower case), nullptr when absent.
  const std::string* header(std::string_view lower_name) const;
};

class HttpRequestParser {
 public:
  explicit HttpRequestParser(HttpLimits limits = {}) : limits_(limits) {}

  /// Reads from `data`; returns how many bytes it used (the caller drops them). Stops after
  /// the head (so that the head can be judged before the body) and after a whole request
  /// (the rest belongs to the next one). Throws HttpError with the status to answer.
  size_t feed(const char* data, size_t size);
  /// The head (request line and headers) has been read; request() has all but the body.
  bool head_done() const { return state_ != State::kHead; }
  /// The whole request has been read.
  bool done() const { return state_ == State::kDone; }
  /// Some bytes of a request have arrived (its read deadline runs).
  bool started() const { return started_; }
  const HttpRequest& request() const { return request_; }
  HttpRequest& request() { return request_; }
  /// Ready for the next request on the same connection.
  void reset();

 private:
  enum class State { kHead, kBody, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kDone };
  size_t feed_head(const char* data, size_t size);
  void parse_head(std::string_view head);
  // A whole line (without CRLF) from data, or false when it is not complete yet; `limit`
  // bounds the line with what was kept of it from earlier calls.
  bool take_line(const char* data, size_t size, size_t& used, std::string& line, size_t limit,
                 int status, const char* what);

  HttpLimits limits_;
  State state_ = State::kHead;
  HttpRequest request_;
  std::string pending_;   // a partial head or chunk-size / trailer line
  size_t remaining_ = 0;  // body bytes (Content-Length) or chunk bytes still to come
  size_t trailer_bytes_ = 0;
  bool started_ = false;
};

}  // namespace destein::http

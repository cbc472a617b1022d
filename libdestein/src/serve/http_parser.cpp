#include "serve/http_parser.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace destein::http {
namespace {

bool is_token_char(unsigned char c) {
  return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether the comma-separated list `value` holds `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    if (lower(trim(value.substr(0, comma))) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

void HttpRequestParser::reset() {
  state_ = State::kHead;
  request_ = HttpRequest();
  pending_.clear();
  remaining_ = 0;
  trailer_bytes_ = 0;
  started_ = false;
}

size_t HttpRequestParser::feed(const char* data, size_t size) {
  size_t used = 0;
  while (used < size && state_ != State::kDone) {
    const char* p = data + used;
    const size_t n = size - used;
    switch (state_) {
      case State::kHead: {
        used += feed_head(p, n);
        if (state_ != State::kHead) return used;  // the caller judges the head first
        break;
      }
      case State::kBody: {
        const size_t take = std::min(n, remaining_);
        request_.body.append(p, take);
        used += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
      case State::kChunkSize: {
        std::string line;
        if (!take_line(p, n, used, line, 1024, 400, "a chunk-size line")) break;
        const std::string_view digits = trim(std::string_view(line).substr(0, line.find(';')));
        if (digits.empty() || digits.size() > 15 ||
            !std::all_of(digits.begin(), digits.end(),
                         [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); })) {
          throw HttpError(400,
                          fmt::format("malformed chunk size '{}' (expected hexadecimal digits)",
                                      std::string(digits.substr(0, 20))));
        }
        const size_t chunk = std::stoull(std::string(digits), nullptr, 16);
        if (chunk > limits_.max_body_bytes - request_.body.size()) {
          throw HttpError(
              413, fmt::format("the request body is larger than the server's limit of {} bytes",
                               limits_.max_body_bytes));
        }
        remaining_ = chunk;
        state_ = chunk == 0 ? State::kTrailers : State::kChunkData;
        break;
      }
      case State::kChunkData: {
        const size_t take = std::min(n, remaining_);
        request_.body.append(p, take);
        used += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        break;
      }
      case State::kChunkDataEnd: {
        std::string line;
        if (!take_line(p, n, used, line, 2, 400, "the end of a chunk")) break;
        if (!line.empty()) throw HttpError(400, "a chunk's data is longer than its size says");
        state_ = State::kChunkSize;
        break;
      }
      case State::kTrailers: {
        std::string line;
        const size_t before = used;
        if (!take_line(p, n, used, line, limits_.max_head_bytes, 431, "a trailer line")) break;
        trailer_bytes_ += used - before;
        if (trailer_bytes_ > limits_.max_head_bytes)
          throw HttpError(431, "the chunked body's trailers are too large");
        if (line.empty()) state_ = State::kDone;  // trailer fields are read and dropped
        break;
      }
      case State::kDone:
        break;
    }
  }
  return used;
}

bool HttpRequestParser::take_line(const char* data, size_t size, size_t& used, std::string& line,
                                  size_t limit, int status, const char* what) {
  const char* nl = static_cast<const char*>(std::memchr(data, '\n', size));
  const size_t take = nl ? static_cast<size_t>(nl - data) + 1 : size;
  if (pending_.size() + take > limit + 2) {
    throw HttpError(status, fmt::format("{} is longer than {} bytes", what, limit));
  }
  pending_.append(data, take);
  used += take;
  if (!nl) return false;
  line.swap(pending_);
  pending_.clear();
  line.pop_back();  // '\n'
  if (line.empty() || line.back() != '\r')
    throw HttpError(400, fmt::format("{} does not end in CRLF", what));
  line.pop_back();
  return true;
}

size_t HttpRequestParser::feed_head(const char* data, size_t size) {
  size_t used = 0;
  // Empty lines before a request line are skipped (RFC 9112 2.2): some clients send a
  // CRLF after a POST body.
  if (pending_.empty()) {
    while (used < size && (data[used] == '\r' || data[used] == '\n')) ++used;
    if (used == size) return used;
  }
  started_ = true;
  // The search starts where the end of the head could begin: every byte is looked at a
  // bounded number of times however the head is split across reads.
  const size_t from = pending_.size() >= 3 ? pending_.size() - 3 : 0;
  const size_t keep =
      std::min(size - used,
               limits_.max_head_bytes + 4 - std::min(pending_.size(), limits_.max_head_bytes + 4));
  pending_.append(data + used, keep);
  const size_t end = pending_.find("\r\n\r\n", from);
  if (end == std::string::npos) {
    if (pending_.size() > limits_.max_head_bytes) {
      throw HttpError(431, fmt::format("the request line and headers are longer than {} bytes",
                                       limits_.max_head_bytes));
    }
    return used + keep;
  }
  // Bytes past the head went into pending_ too: give them back.
  const size_t head_size = end + 4;
  const size_t extra = pending_.size() - head_size;
  parse_head(std::string_view(pending_).substr(0, end + 2));
  pending_.clear();
  return used + keep - extra;
}

void HttpRequestParser::parse_head(std::string_view head) {
  if (head.size() > limits_.max_head_bytes) {
    throw HttpError(431, fmt::format("the request line and headers are longer than {} bytes",
                                     limits_.max_head_bytes));
  }
  HttpRequest& r = request_;
  size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  // METHOD SP target SP HTTP/1.x
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    throw HttpError(400, "malformed request line (expected METHOD TARGET HTTP/1.1)");
  }
  const std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                         version = line.substr(sp2 + 1);
  if (method.empty() || !std::all_of(method.begin(), method.end(), [](char c) {
        return is_token_char(static_cast<unsigned char>(c));
      })) {
    throw HttpError(400, "malformed request method");
  }
  if (target.empty() || target[0] != '/' || std::any_of(target.begin(), target.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
      })) {
    throw HttpError(400, "malformed request target (expected a path such as /v1/completions)");
  }
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." ||
      (version[7] != '0' && version[7] != '1')) {
    if (version.substr(0, 5) == "HTTP/")
      throw HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served");
    throw HttpError(400, "malformed HTTP version in the request line");
  }
  r.method = std::string(method);
  r.target = std::string(target);
  r.path = r.target.substr(0, r.target.find('?'));
  r.minor_version = version[7] - '0';
  while (!head.empty()) {
    eol = head.find("\r\n");
    const std::string_view field = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (field.empty()) continue;
    if (field[0] == ' ' || field[0] == '\t')
      throw HttpError(400, "folded header lines are not accepted (RFC 9112 5.2)");
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(field.begin(), field.begin() + static_cast<std::ptrdiff_t>(colon),
                     [](char c) { return is_token_char(static_cast<unsigned char>(c)); })) {
      throw HttpError(400, "malformed header line (expected Name: value)");
    }
    const std::string_view value = trim(field.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(),
                    [](char c) { return c == '\0' || c == '\r' || c == '\n'; })) {
      throw HttpError(400, "a header value holds a control character");
    }
    if (r.headers.size() >= limits_.max_headers)
      throw HttpError(431, fmt::format("more than {} header lines", limits_.max_headers));
    r.headers.emplace_back(lower(field.substr(0, colon)), std::string(value));
  }
  // The body's framing. Both Transfer-Encoding and Content-Length, or two lengths, could be
  // read two ways by two servers (request smuggling): refused.
  const std::string* te = nullptr;
  const std::string* cl = nullptr;
  for (const auto& [name, value] : r.headers) {
    if (name == "transfer-encoding") {
      if (te) throw HttpError(400, "Transfer-Encoding is given twice");
      te = &value;
    } else if (name == "content-length") {
      if (cl && *cl != value)
        throw HttpError(400, "Content-Length is given twice with different values");
      cl = &value;
    }
  }
  if (te && cl) throw HttpError(400, "both Transfer-Encoding and Content-Length are given");
  if (te) {
    if (lower(*te) != "chunked")
      throw HttpError(501, fmt::format("Transfer-Encoding '{}' is not supported (only chunked)",
                                       te->substr(0, 40)));
    if (r.minor_version == 0) throw HttpError(400, "Transfer-Encoding is not allowed in HTTP/1.0");
    r.chunked = true;
  } else if (cl) {
    if (cl->empty() || cl->size() > 19 ||
        !std::all_of(cl->begin(), cl->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      throw HttpError(400, fmt::format("malformed Content-Length '{}'", cl->substr(0, 20)));
    }
    r.content_length = std::stoull(*cl);
    if (r.content_length > limits_.max_body_bytes) {
      throw HttpError(
          413,
          fmt::format("the request body ({} bytes) is larger than the server's limit of {} bytes",
                      r.content_length, limits_.max_body_bytes));
    }
  }
  const std::string* connection = r.header("connection");
  r.keep_alive = r.minor_version == 1 ? !(connection && has_token(*connection, "close"))
                                      : (connection && has_token(*connection, "keep-alive"));
  if (const std::string* expect = r.header("expect")) {
    if (lower(*expect) != "100-continue")
      throw HttpError(417, "only 'Expect: 100-continue' is understood");
    r.expect_continue = r.minor_version == 1;
  }
  if (r.chunked) {
    state_ = State::kChunkSize;
  } else if (r.content_length > 0) {
    remaining_ = r.content_length;
    state_ = State::kBody;
  } else {
    state_ = State::kDone;
  }
  r.body.reserve(std::min(r.content_length, limits_.max_body_bytes));
}

}  // namespace destein::http

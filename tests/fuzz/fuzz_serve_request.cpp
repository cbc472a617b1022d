// `destein serve`'s request path without a socket or a model: bytes as a client would send
// them go through the HTTP/1.1 reader (split where the input says, as reads split them),
// then every whole request's Authorization header and body through what the server runs
// before the engine (bearer_credentials, parse_completion_request / parse_chat_request),
// and the error object it would answer with. A failure must be an HttpError or an
// ApiError, never a crash, a hang, unbounded memory or a sanitizer report.
#include <cstdint>
#include <string>

#include "serve/http_parser.hpp"
#include "serve/openai_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the read size (1..256 bytes), the rest is the connection's bytes.
  const size_t step = static_cast<size_t>(data[0]) + 1;
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  destein::http::HttpLimits limits;
  limits.max_head_bytes = 1024;
  limits.max_headers = 16;
  limits.max_body_bytes = 2048;
  destein::http::HttpRequestParser parser(limits);
  std::string buffer;
  try {
    for (size_t at = 0; at < bytes.size() || !buffer.empty();) {
      if (at < bytes.size()) {
        buffer.append(bytes, at, step);
        at += step;
      }
      const size_t used = parser.feed(buffer.data(), buffer.size());
      buffer.erase(0, used);
      if (buffer.size() > limits.max_head_bytes + limits.max_body_bytes + 256 + step)
        __builtin_trap();  // unbounded
      if (!parser.done()) {
        if (used == 0 && at >= bytes.size()) break;
        continue;
      }
      const destein::http::HttpRequest& req = parser.request();
      if (const std::string* auth = req.header("authorization"))
        (void)destein::bearer_credentials(*auth);
      try {
        if (req.path == "/v1/chat/completions") {
          (void)destein::parse_chat_request(req.body);
        } else {
          (void)destein::parse_completion_request(req.body);
        }
      } catch (const destein::ApiError& e) {
        // As the server writes it (server.cpp's wire()): bytes that are not UTF-8 become U+FFFD.
        (void)destein::error_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
      parser.reset();
    }
  } catch (const destein::http::HttpError& e) {
    if (e.status() < 400 || e.status() > 505) __builtin_trap();
  }
  return 0;
}

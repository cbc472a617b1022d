#pragma once
/// `destein serve`: an OpenAI-compatible HTTP server (its own HTTP/1.1 connection layer,
/// kept out of this header: docs/serving.md, "Exposure") over a BatchEngine, with per-request DeStein steering by vectors names
/// configured at start. Endpoints: GET /health, GET /v1/models, GET /metrics,
/// POST /v1/completions, POST /v1/chat/completions (docs/serving.md).
///
///   destein::ServerOptions opts;
///   opts.vectors = {{"detox", "runs/tiny/vectors.safetensors"}};
///   destein::Server server(*model, *tokenizer, opts);
///   int port = server.bind();                      // throws when the address is taken
///   server.serve([] { return destein::stop_signal() != 0; });  // drains, then returns

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "destein/runtime/decoding_method.hpp"
#include "destein/runtime/model.hpp"
#include "destein/serve/chat_template.hpp"
#include "destein/steer/steering.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                     ///< 0: any free port (bind() says which)
  std::string model_name = "destein";  ///< the id /v1/models lists and responses carry
  /// Vectors sets a request may name: (name, vectors file). Loaded and checked at start.
  std::vector<std::pair<std::string, std::string>> vectors;
  /// Decoding-time methods a request may name (`"method": NAME`): (name, method). Their
  /// processors (experts loaded on the model's device, word lists read) are built at start
  /// and shared by every request naming them (docs/serving.md).
  std::vector<std::pair<std::string, DecodingMethod>> methods;
  /// Defaults for the fields a request's `steering` object leaves out.
  SteeringOptions steering_defaults;
  ChatTemplate chat_template = ChatTemplate::kPlain;
  std::optional<std::string> api_key;  ///< required as "Authorization: Bearer KEY" when set
  size_t max_body_bytes = 1 << 20;     ///< larger bodies get 413
  int64_t max_rows = 32;               ///< rows decoded together
  int64_t max_queue = 64;              ///< requests waiting beyond that; more get 429
  double request_timeout_s = 300;      ///< per request, queueing included; then 504
  int64_t default_chat_max_tokens = 256;
  int http_threads = 0;  ///< workers answering whole requests; 0: max_rows + max_queue + 8
  /// Open connections at most; more wait in the kernel's accept queue. A connection that
  /// is still sending its request, or idle between requests, holds no worker.
  size_t max_connections = 1024;
  double header_timeout_s =
      10;                      ///< from a request's first byte to the end of its headers; then 408
  double body_timeout_s = 30;  ///< from the end of the headers to the end of the body; then 408
  double keep_alive_timeout_s = 5;  ///< an open connection with no request is closed after this
};

class Server {
 public:
  /// Loads the vectors sets (throws std::runtime_error / std::invalid_argument naming the
  /// file when one does not fit the model) and starts the engine. `model` and `tokenizer`
  /// must outlive the server.
  Server(const Model& model, const Tokenizer& tokenizer, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds host:port; returns the port. Throws std::runtime_error when it cannot.
  int bind();
  /// Serves until stop() is called or `should_stop` returns true (asked at every request's
  /// headers, so that no request is taken after it turns true, and every 20 ms); then
  /// closes the listening socket, lets queued and running requests finish, and returns.
  void serve(const std::function<bool()>& should_stop = {});
  /// Asks serve() to drain and return (any thread).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace destein

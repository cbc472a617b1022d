#pragma once
// The connection layer of `destein serve` (LibTorch-free): one thread reads every
// connection with poll() until a whole request is there, a pool of workers answers whole
// requests. A slow or idle client therefore holds a socket, never a worker; reading has
// deadlines (head, body, idle keep-alive), every limit holds while the bytes arrive
// (http_parser.hpp), a request can be refused from its head before its body is read, and
// pipelined requests are answered in order. docs/serving.md says why this replaced
// cpp-httplib 0.11.
//
//   HttpServer server(options, handlers);
//   int port = server.bind("127.0.0.1", 0);
//   server.start();
//   ... server.stop_accepting();   // listening socket closed, idle connections closed
//   server.join();                 // workers finish what they hold

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "serve/http_parser.hpp"

namespace destein::http {

struct HttpServerOptions {
  HttpLimits limits;
  int threads = 8;                ///< workers answering whole requests
  size_t max_connections = 1024;  ///< open connections; more are closed at accept
  double head_timeout_s = 10;     ///< from a request's first byte to the end of its head
  double body_timeout_s = 30;     ///< from the end of the head to the end of the body
  double idle_timeout_s = 5;      ///< a kept-alive (or new) connection with no request
  double write_timeout_s = 30;  ///< a client that reads none of an answer for this long is dropped
};

class HttpExchange;

/// An answer: a whole body, or a stream written in chunks (Transfer-Encoding: chunked) by
/// `stream` on the worker.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::function<void(HttpExchange&)> stream;
};

/// What a handler sees of its connection while it answers.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  /// The client closed its side (a zero-byte peek).
  virtual bool client_gone() = 0;
  /// One chunk of a streamed answer; false when the client is gone or stopped reading.
  virtual bool write(std::string_view data) = 0;
};

struct HttpHandlers {
  /// Judges a request from its head, before its body is read: an answer refuses it (404,
  /// 405, 401, 503), and the connection then closes. Called on the reading thread: cheap.
  std::function<std::optional<HttpResponse>(const HttpRequest&)> check_head;
  /// Answers a whole request (on a worker).
  std::function<HttpResponse(const HttpRequest&, HttpExchange&)> handle;
  /// The body of an answer the reader itself gives (400, 408, 413, 431, 503, ...).
  std::function<HttpResponse(int status, const std::string& message)> error;
  /// True from the moment the server must take no new request (checked for every head).
  std::function<bool()> refusing;
};

/// "HTTP/1.1 200 OK\r\n..." with Content-Length (or chunked when `chunked`).
std::string serialize_head(const HttpResponse& r, bool keep_alive, bool chunked);

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandlers handlers);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Listens on host:port (0: any free port); returns the port. Throws std::runtime_error.
  int bind(const std::string& host, int port);
  /// Starts the reading thread and the workers.
  void start();
  /// Closes the listening socket and every connection not held by a worker; answers
  /// still being written finish, their connections then close.
  void stop_accepting();
  /// Requests held by workers, waiting or running: a drain waits for 0.
  int busy() const { return busy_.load(); }
  /// Stops everything (after stop_accepting(), waits for the workers).
  void join();

 private:
  struct Connection;
  void read_loop();
  void work_loop();
  void accept_all();
  // Reads what `c` has sent; false when the client closed the connection.
  bool read_from(Connection& c);
  // Gives the read bytes to the parser: may answer and linger (a refusal), or hand a whole
  // request to the workers (the slot is then empty). True while the request goes on.
  bool advance(std::unique_ptr<Connection>& slot);
  // Answers from the reading thread (an error or a refusal), then closes for writing and
  // reads (and drops) what the client still sends for a moment, so that it sees the answer.
  void answer_and_close(Connection& c, const HttpResponse& r);
  void answer(Connection& c);  // on a worker
  void give_back(std::unique_ptr<Connection> c);

  HttpServerOptions options_;
  HttpHandlers handlers_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> accepting_{true}, stopping_{false};
  std::atomic<int> busy_{0};
  std::vector<std::unique_ptr<Connection>> reading_;  // owned by the reading thread
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::deque<std::unique_ptr<Connection>> work_;       // whole requests for the workers
  std::vector<std::unique_ptr<Connection>> returned_;  // kept-alive connections coming back
  std::thread reader_;
  std::vector<std::thread> workers_;
};

}  // namespace destein::http

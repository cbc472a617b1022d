#include "serve/http_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace destein::http {
namespace {

using Clock = std::chrono::steady_clock;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

const char* reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 417:
      return "Expectation Failed";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Status";
  }
}

// Writes all of `data` before `deadline`; false when the client is gone or does not read.
bool send_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR)
        return false;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

std::string serialize_head(const HttpResponse& r, bool keep_alive, bool chunked) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\n", r.status,
                                reason(r.status), r.content_type);
  if (chunked) {
    out += "Transfer-Encoding: chunked\r\n";
  } else {
    out += fmt::format("Content-Length: {}\r\n", r.body.size());
  }
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  for (const auto& [name, value] : r.headers) out += fmt::format("{}: {}\r\n", name, value);
  return out + "\r\n";
}

struct HttpServer::Connection {
  enum class Phase { kIdle, kRequest, kLinger };
  explicit Connection(int f, HttpLimits limits) : fd(f), parser(limits) {}
  ~Connection() {
    if (fd >= 0) ::close(fd);
  }
  int fd;
  std::string in;  // read, not yet given to the parser (pipelined requests wait here)
  HttpRequestParser parser;
  Phase phase = Phase::kIdle;
  Clock::time_point deadline;
  size_t dropped = 0;  // bytes read and dropped while lingering
};

namespace {

class SocketExchange : public HttpExchange {
 public:
  SocketExchange(int fd, double write_timeout_s) : fd_(fd), timeout_(seconds(write_timeout_s)) {}
  bool client_gone() override {
    char byte;
    const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  bool write(std::string_view data) override {
    if (!ok_) return false;
    if (data.empty()) return true;  // an empty chunk would end the body
    std::string framed = fmt::format("{:x}\r\n", data.size());
    framed.append(data);
    framed += "\r\n";
    ok_ = send_all(fd_, framed, Clock::now() + timeout_);
    return ok_;
  }
  bool send(std::string_view data) {
    ok_ = ok_ && send_all(fd_, data, Clock::now() + timeout_);
    return ok_;
  }

 private:
  int fd_;
  Clock::duration timeout_;
  bool ok_ = true;
};

}  // namespace

HttpServer::HttpServer(HttpServerOptions options, HttpHandlers handlers)
    : options_(std::move(options)), handlers_(std::move(handlers)) {
  if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
}

HttpServer::~HttpServer() {
  stop_accepting();
  join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

int HttpServer::bind(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
  if (rc != 0)
    throw std::runtime_error(
        fmt::format("cannot listen on {}:{}: {}", host, port, ::gai_strerror(rc)));
  std::string why = "no address";
  for (addrinfo* a = found; a; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
      listen_fd_ = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0)
    throw std::runtime_error(fmt::format("cannot listen on {}:{}: {}", host, port, why));
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  return addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

void HttpServer::start() {
  reader_ = std::thread([this] { read_loop(); });
  for (int i = 0; i < std::max(1, options_.threads); ++i)
    workers_.emplace_back([this] { work_loop(); });
}

void HttpServer::stop_accepting() {
  accepting_ = false;
  [[maybe_unused]] const ssize_t n = ::write(wake_[1], "s", 1);
}

void HttpServer::join() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  [[maybe_unused]] const ssize_t n = ::write(wake_[1], "j", 1);
  work_ready_.notify_all();
  if (reader_.joinable()) reader_.join();
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
  workers_.clear();
  reading_.clear();
  returned_.clear();
}

void HttpServer::read_loop() {
  std::vector<pollfd> fds;
  while (!stopping_) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& c : returned_) {
        if (!accepting_) continue;  // dropped (closed) below
        c->phase = Connection::Phase::kIdle;
        c->deadline = Clock::now() + seconds(options_.idle_timeout_s);
        reading_.push_back(std::move(c));
      }
      returned_.clear();
    }
    // A pipelined request already read waits in `in`: it starts without new bytes.
    for (auto& c : reading_) {
      if (c && c->phase == Connection::Phase::kIdle && !c->in.empty()) advance(c);
    }
    if (!accepting_) {
      if (listen_fd_ >= 0) {
        ::close(listen_fd_);
        listen_fd_ = -1;
      }
      for (auto& c : reading_) {
        if (c && c->phase != Connection::Phase::kLinger) c.reset();
      }
    }
    reading_.erase(std::remove(reading_.begin(), reading_.end(), nullptr), reading_.end());

    fds.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    const bool can_accept =
        listen_fd_ >= 0 && reading_.size() + static_cast<size_t>(busy_) < options_.max_connections;
    if (can_accept) fds.push_back({listen_fd_, POLLIN, 0});
    const size_t first_conn = fds.size();
    for (auto& c : reading_) fds.push_back({c->fd, POLLIN, 0});
    const int ready = ::poll(fds.data(), fds.size(), 50);
    if (ready < 0 && errno != EINTR) break;
    if (fds[0].revents) {
      char buf[64];
      while (::read(wake_[0], buf, sizeof(buf)) > 0) {
      }
    }
    if (can_accept && fds[1].revents) accept_all();
    for (size_t i = first_conn; i < fds.size(); ++i) {
      std::unique_ptr<Connection>& c = reading_[i - first_conn];
      if (!c || !fds[i].revents) continue;
      const bool open = read_from(*c);
      // A request sent just before the client closed its side is still answered.
      if (c->phase != Connection::Phase::kLinger && !c->in.empty()) advance(c);
      if (!open && c) c.reset();
    }
    const auto now = Clock::now();
    for (auto& c : reading_) {
      if (!c || now < c->deadline) continue;
      if (c->phase == Connection::Phase::kRequest) {
        answer_and_close(
            *c, handlers_.error(
                    408, c->parser.head_done()
                             ? "the request body did not arrive in time (--body-timeout)"
                             : "the request headers did not arrive in time (--header-timeout)"));
      } else {
        c.reset();  // idle past its keep-alive time, or done lingering
      }
    }
    reading_.erase(std::remove(reading_.begin(), reading_.end(), nullptr), reading_.end());
  }
}

void HttpServer::accept_all() {
  while (true) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (!accepting_ || (handlers_.refusing && handlers_.refusing()) ||
        reading_.size() + static_cast<size_t>(busy_) >= options_.max_connections) {
      ::close(fd);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_unique<Connection>(fd, options_.limits);
    c->deadline = Clock::now() + seconds(options_.idle_timeout_s);
    reading_.push_back(std::move(c));
  }
}

bool HttpServer::read_from(Connection& c) {
  char buf[64 * 1024];
  // A few reads per round: one fast sender does not hold up the others.
  for (int round = 0; round < 4; ++round) {
    const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
    if (n > 0) {
      if (c.phase == Connection::Phase::kLinger) {
        c.dropped += static_cast<size_t>(n);
        if (c.dropped > (64u << 20)) return false;
      } else {
        c.in.append(buf, static_cast<size_t>(n));
        // Past a whole request the rest waits for the answer (no more reads meanwhile).
        if (c.in.size() > 256 * 1024) return true;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;  // closed by the client, or reset
  }
  return true;
}

bool HttpServer::advance(std::unique_ptr<Connection>& slot) {
  Connection& c = *slot;
  try {
    while (true) {
      const bool had_head = c.parser.head_done();
      const size_t used = c.parser.feed(c.in.data(), c.in.size());
      c.in.erase(0, used);
      if (c.phase == Connection::Phase::kIdle && c.parser.started()) {
        c.phase = Connection::Phase::kRequest;
        c.deadline = Clock::now() + seconds(options_.head_timeout_s);
      }
      if (!had_head && c.parser.head_done()) {
        c.deadline = Clock::now() + seconds(options_.body_timeout_s);
        if (handlers_.refusing && handlers_.refusing()) {
          answer_and_close(
              c, handlers_.error(503, "the server is shutting down and takes no new requests"));
          return false;
        }
        if (handlers_.check_head) {
          if (std::optional<HttpResponse> refusal = handlers_.check_head(c.parser.request())) {
            answer_and_close(c, *refusal);
            return false;
          }
        }
        if (c.parser.request().expect_continue && !c.parser.done()) {
          const std::string go = "HTTP/1.1 100 Continue\r\n\r\n";
          if (!send_all(c.fd, go, Clock::now() + std::chrono::seconds(1))) {
            slot.reset();
            return false;
          }
        }
      }
      if (c.parser.done()) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++busy_;
        work_.push_back(std::move(slot));
        work_ready_.notify_one();
        return true;
      }
      if (used == 0 || c.in.empty()) return true;
    }
  } catch (const HttpError& e) {
    answer_and_close(c, handlers_.error(e.status(), e.what()));
  }
  return false;
}

void HttpServer::answer_and_close(Connection& c, const HttpResponse& r) {
  const std::string out = serialize_head(r, false, false) + r.body;
  send_all(c.fd, out, Clock::now() + std::chrono::milliseconds(200));
  ::shutdown(c.fd, SHUT_WR);
  c.phase = Connection::Phase::kLinger;
  c.in.clear();
  c.in.shrink_to_fit();
  c.parser.reset();
  c.deadline = Clock::now() + std::chrono::seconds(2);
}

void HttpServer::work_loop() {
  while (true) {
    std::unique_ptr<Connection> c;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [this] { return !work_.empty() || stopping_; });
      if (work_.empty()) return;
      c = std::move(work_.front());
      work_.pop_front();
    }
    answer(*c);
    if (c->fd >= 0 && accepting_) {
      std::lock_guard<std::mutex> lock(mutex_);
      returned_.push_back(std::move(c));
    }
    c.reset();
    --busy_;
    [[maybe_unused]] const ssize_t n = ::write(wake_[1], "r", 1);
  }
}

void HttpServer::answer(Connection& c) {
  const HttpRequest& req = c.parser.request();
  SocketExchange exchange(c.fd, options_.write_timeout_s);
  HttpResponse r;
  try {
    r = handlers_.handle(req, exchange);
  } catch (const std::exception& e) {
    r = handlers_.error(500, fmt::format("internal error: {}", e.what()));
  }
  const bool keep_alive =
      req.keep_alive && accepting_ && !(handlers_.refusing && handlers_.refusing());
  bool ok;
  if (r.stream) {
    ok = exchange.send(serialize_head(r, keep_alive, true));
    if (ok) r.stream(exchange);
    ok = ok && exchange.send("0\r\n\r\n");
  } else {
    ok = exchange.send(serialize_head(r, keep_alive, false) + r.body);
  }
  if (!ok || !keep_alive) {
    ::close(c.fd);
    c.fd = -1;
    return;
  }
  c.parser.reset();
}

}  // namespace destein::http

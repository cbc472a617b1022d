// A raw TCP client of 127.0.0.1 for the tests that curl cannot play: a client that sends
// its headers a byte a second, pipelines requests, or stops after the head. Its response
// reader is written from RFC 9112 (status line, Content-Length or chunked), apart from
// the server's request reader.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

namespace destein::test {

struct RawReply {
  int status = 0;  ///< 0: no reply (closed or timed out)
  std::string head, body;
};

class RawClient {
 public:
  /// Connects to 127.0.0.1:port (loopback only).
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  bool connected() const { return fd_ >= 0; }

  /// Sends all of `data`; false when the server closed or reset the connection.
  bool send(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  /// Whether a byte (or the end of the stream) can be read within `ms`.
  bool readable(int ms) {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  }

  /// Reads one response; status 0 when none arrives within `timeout`.
  RawReply read_reply(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    RawReply r;
    size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill(end)) return r;
    }
    r.head = buf_.substr(0, head_end + 2);
    buf_.erase(0, head_end + 4);
    if (r.head.rfind("HTTP/1.1 ", 0) != 0 || r.head.size() < 12)
      throw std::runtime_error("bad status line: " + r.head);
    const int status = std::stoi(r.head.substr(9, 3));
    const std::string lower = to_lower(r.head);
    if (lower.find("\r\ntransfer-encoding: chunked\r\n") != std::string::npos) {
      while (true) {
        size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos) {
          if (!fill(end)) return r;
        }
        const size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
        while (buf_.size() < eol + 2 + size + 2) {
          if (!fill(end)) return r;
        }
        r.body += buf_.substr(eol + 2, size);
        buf_.erase(0, eol + 2 + size + 2);
        if (size == 0) break;
      }
    } else {
      const size_t at = lower.find("\r\ncontent-length: ");
      const size_t length = at == std::string::npos ? 0 : std::stoul(lower.substr(at + 18));
      while (buf_.size() < length) {
        if (!fill(end)) return r;
      }
      r.body = buf_.substr(0, length);
      buf_.erase(0, length);
    }
    r.status = status;
    return r;
  }

  /// True when the server closed the connection within `ms` (end of stream or reset).
  bool closed_within(int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      if (!readable(10)) continue;
      char b[4096];
      const ssize_t n = ::recv(fd_, b, sizeof(b), 0);
      if (n <= 0) return true;
      buf_.append(b, static_cast<size_t>(n));
    }
    return false;
  }

 private:
  static std::string to_lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  bool fill(std::chrono::steady_clock::time_point end) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0 || !readable(static_cast<int>(left))) return false;
    char b[65536];
    const ssize_t n = ::recv(fd_, b, sizeof(b), 0);
    if (n <= 0) return false;
    buf_.append(b, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buf_;
};

/// Resident memory of a process, from /proc/PID/status (kB).
inline long resident_kb(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (std::fgets(line, sizeof(line), f)) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) kb = std::atol(line + 6);
  }
  std::fclose(f);
  return kb;
}

}  // namespace destein::test

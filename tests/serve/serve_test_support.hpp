// Helpers of the `destein serve` tests: the server as a child process on a free port of
// 127.0.0.1, and curl as the HTTP client (real sockets, a client we did not write).
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace destein::test {

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// `destein serve` started with `args` (plus --port 0) and stopped with SIGTERM at the end.
class ServeProcess {
 public:
  ServeProcess(const std::vector<std::string>& args, const std::filesystem::path& dir)
      : log_(dir / "serve.log") {
    std::vector<std::string> argv = {DESTEIN_CLI, "serve"};
    // A YAML config carries its own port (0 in the tests).
    if (std::find(args.begin(), args.end(), "--config") == args.end())
      argv.insert(argv.end(), {"--port", "0"});
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    // fork + exec rather than posix_spawn: the child asks for SIGTERM when the test process
    // dies, so a crashed test leaves no server behind.
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("cannot start destein serve");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) _exit(127);
      dup2(fd, 1);
      dup2(fd, 2);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 600; ++i) {
      std::smatch m;
      const std::string text = slurp(log_);
      if (std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("destein serve exited before listening:\n" + text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("destein serve did not listen within 30 s:\n" + slurp(log_));
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      wait_exit(std::chrono::seconds(30));
      if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url(const std::string& path) const {
    return fmt::format("http://127.0.0.1:{}{}", port_, path);
  }
  std::string log() const { return slurp(log_); }
  /// Waits for the process to end; its exit code, or -1 when it did not end in time.
  int wait_exit(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (pid_ > 0 && std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int port_ = -1;
};

struct HttpReply {
  int status = 0;
  std::string headers, body;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

/// The curl command line for one request; its body goes to `out`, headers to `out`.headers,
/// the status to stdout.
inline std::string curl_command(const std::string& method, const std::string& url,
                                const std::string& body_file, const std::filesystem::path& out,
                                const std::string& extra = "") {
  std::string cmd =
      fmt::format("curl -s -S -X {} -o {} -D {} -w '%{{http_code}}' --max-time 120 {}", method,
                  shell_quote(out.string()), shell_quote(out.string() + ".headers"), extra);
  if (!body_file.empty())
    cmd += " -H 'Content-Type: application/json' --data-binary @" + shell_quote(body_file);
  return cmd + " " + shell_quote(url);
}

inline HttpReply read_reply(const std::filesystem::path& out, const std::string& status_text) {
  HttpReply r;
  r.status = std::atoi(status_text.c_str());
  r.body = slurp(out);
  r.headers = slurp(out.string() + ".headers");
  return r;
}

/// One request with curl.
inline HttpReply http(const std::string& method, const std::string& url, const std::string& body,
                      const std::filesystem::path& dir, const std::string& extra = "") {
  static int counter = 0;
  const auto out = dir / fmt::format("reply_{}", counter++);
  std::string body_file;
  if (!body.empty()) {
    body_file = out.string() + ".request";
    std::ofstream(body_file, std::ios::binary) << body;
  }
  CommandResult r = run_command(curl_command(method, url, body_file, out, extra));
  return read_reply(out, r.output);
}

/// Many requests at once: one curl process each, all started before any is waited for.
inline std::vector<HttpReply> http_concurrent(const std::string& url,
                                              const std::vector<std::string>& bodies,
                                              const std::filesystem::path& dir,
                                              const std::string& extra = "") {
  std::string script;
  for (size_t i = 0; i < bodies.size(); ++i) {
    const auto out = dir / fmt::format("concurrent_{}", i);
    std::ofstream(out.string() + ".request", std::ios::binary) << bodies[i];
    script += "(" + curl_command("POST", url, out.string() + ".request", out, extra) + " > " +
              shell_quote(out.string() + ".status") + ") &\n";
  }
  script += "wait\n";
  std::ofstream(dir / "concurrent.sh") << script;
  run_command("bash " + shell_quote((dir / "concurrent.sh").string()));
  std::vector<HttpReply> replies;
  for (size_t i = 0; i < bodies.size(); ++i) {
    const auto out = dir / fmt::format("concurrent_{}", i);
    replies.push_back(read_reply(out, slurp(out.string() + ".status")));
  }
  return replies;
}

}  // namespace destein::test

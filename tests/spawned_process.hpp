// A program started in the background by a test, stdout and stderr into a log file: the
// fault tests signal it mid-run, the MPI tests kill a rank of it.
#pragma once

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace destein::test {

class SpawnedProcess {
 public:
  /// argv[0] is the program's path. The process is killed when the object goes away.
  SpawnedProcess(const std::vector<std::string>& argv, const std::filesystem::path& log)
      : log_(log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE(rc == 0);
  }
  /// A shell command line, exec'd by /bin/sh so that the pid is the command's.
  static std::vector<std::string> shell(const std::string& command) {
    return {"/bin/sh", "-c", "exec " + command};
  }
  ~SpawnedProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  SpawnedProcess(const SpawnedProcess&) = delete;
  SpawnedProcess& operator=(const SpawnedProcess&) = delete;

  pid_t pid() const { return pid_; }
  /// True once the process has installed a handler for `sig` (/proc/<pid>/status SigCgt),
  /// so that the signal is not taken by the default action during start-up.
  bool catches(int sig) const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("SigCgt:", 0) == 0) {
        const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
        return (mask >> (sig - 1)) & 1ULL;
      }
    }
    return false;
  }
  /// Polls every 10 ms until `ready()` holds (true), or the process ends or `timeout`
  /// passes (false).
  template <typename F>
  bool wait_until(F ready, std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (ready()) return true;
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  void signal(int sig) const { kill(pid_, sig); }
  /// Exit code, or 1000 + signal number when a signal ended the process.
  int wait() {
    if (pid_ > 0) {
      waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 1000 + WTERMSIG(status_);
  }
  std::string output() const { return read_all(log_); }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  std::filesystem::path log_;
};

}  // namespace destein::test

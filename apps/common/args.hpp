#pragma once
// Command-line parsing shared by apps/ and benchmarks/: `--key value`, `--key=value` and
// bare `--flag`. Every option a command reads must be declared through one of the
// getters; finish() rejects anything left over, so a misspelt flag is an error, not a
// silently ignored setting.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace destein::app {

class Args {
 public:
  /// argv[first..] are parsed; positional words are kept in order.
  Args(int argc, char** argv, int first = 1);

  std::optional<std::string> get(const std::string& key);
  std::string get_or(const std::string& key, const std::string& fallback);
  std::string require(const std::string& key);
  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);
  bool flag(const std::string& key);
  /// Comma-separated integers, e.g. `--ids 5,17,42`.
  std::vector<int64_t> get_int_list(const std::string& key);

  const std::vector<std::string>& positional() const { return positional_; }

  /// Throws std::invalid_argument naming any option that no getter asked for.
  void finish() const;

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_seen_;
  std::set<std::string> used_;
  std::vector<std::string> positional_;
};

/// Threads for LibTorch: `--threads N`, else DESTEIN_THREADS, else every hardware core.
int default_thread_count();

}  // namespace destein::app

#pragma once
// Command-line parsing shared by apps/ and benchmarks/: `--key value`, `--key=value` and
// bare `--flag`. Every option a command reads must be declared through one of the
// getters; finish() rejects anything left over, so a misspelt flag is an error, not a
// silently ignored setting. The getters also document the command: with --help (or -h)
// they answer defaults, record each option with its default and help text, and finish()
// throws HelpRequested carrying the option list, which main() prints.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace destein::app {

/// Thrown by Args::finish() under --help; what() is the option list.
struct HelpRequested : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  /// argv[first..] are parsed; positional words are kept in order.
  Args(int argc, char** argv, int first = 1);

  /// Each getter takes an optional help text shown by --help.
  std::optional<std::string> get(const std::string& key, const char* help = nullptr);
  std::string get_or(const std::string& key, const std::string& fallback,
                     const char* help = nullptr);
  std::string require(const std::string& key, const char* help = nullptr);
  int64_t get_int(const std::string& key, int64_t fallback, const char* help = nullptr);
  double get_double(const std::string& key, double fallback, const char* help = nullptr);
  bool flag(const std::string& key, const char* help = nullptr);
  /// Comma-separated integers, e.g. `--ids 5,17,42`.
  std::vector<int64_t> get_int_list(const std::string& key, const char* help = nullptr);
  /// An integer list option that may be given several times, one list per occurrence in
  /// command-line order (`--debias-prefix-ids 1,2 --debias-prefix-ids 3`).
  std::vector<std::vector<int64_t>> get_int_lists(const std::string& key,
                                                  const char* help = nullptr);

  const std::vector<std::string>& positional() const { return positional_; }
  /// True when --help or -h was given: getters return their defaults.
  bool help_requested() const { return help_; }

  /// Throws std::invalid_argument naming any option that no getter asked for; under
  /// --help throws HelpRequested with the options the getters declared.
  void finish() const;

 private:
  struct OptionDoc {
    std::string key, value, help;  // value: "" for a flag, else e.g. "N (default 0)"
  };
  std::optional<std::string> lookup(const std::string& key);
  void document(const std::string& key, std::string value, const char* help);
  bool help_ = false;
  std::vector<OptionDoc> docs_;
  std::map<std::string, std::string> values_;                   // the last value of each key
  std::map<std::string, std::vector<std::string>> all_values_;  // every value, in order
  std::set<std::string> flags_seen_;
  std::set<std::string> used_;
  std::vector<std::string> positional_;
};

/// Threads for LibTorch: `--threads N`, else DESTEIN_THREADS, else every hardware core.
int default_thread_count();

}  // namespace destein::app

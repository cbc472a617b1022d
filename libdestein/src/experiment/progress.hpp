#pragma once
/// A progress bar with rate and ETA on stderr for every long stage of an experiment. On a
/// terminal it redraws one line; otherwise (logs, CI) it prints a line at most every 10
/// seconds.

#include <chrono>
#include <cstdint>
#include <string>

namespace destein {

/// `ProgressBar bar("activations", n, "texts"); ... bar.update(done); ... bar.finish();`
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "items",
              int64_t already_done = 0);
  /// Sets the number of items done so far (absolute, not an increment).
  void update(int64_t done);
  /// Prints the final line with the total time.
  void finish();

 private:
  void draw(bool final_line);
  std::string label_, unit_;
  int64_t total_, done_, start_done_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace destein

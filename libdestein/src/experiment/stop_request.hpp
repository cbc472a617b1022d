#pragma once
/// SIGINT / SIGTERM as a request to stop at the next unit boundary (a prompt written, a
/// batch of activations, a training step), not in the middle of a write. The first signal
/// is recorded; a second one ends the process at once (the default action). The experiment
/// runners call check_stop() between units; a program opts in with install_stop_handlers()
/// (the library never installs handlers by itself).
///
///   install_stop_handlers();                       // first thing in main()
///   ... progress callback: check_stop("rerun the same command to resume");
///   catch (const StopRequested& e) { print e.what(); return e.exit_code(); }

#include <stdexcept>
#include <string>

namespace destein {

/// Installs the SIGINT and SIGTERM handlers (SA_RESTART, reset to the default after one).
void install_stop_handlers();

/// The signal received since install_stop_handlers(), 0 when none.
int stop_signal();

/// Thrown at a unit boundary after a stop request. what(): what was kept and how to resume.
class StopRequested : public std::runtime_error {
 public:
  StopRequested(int signal, const std::string& message);
  int signal() const { return signal_; }
  /// 128 + the signal number, as a shell reports a process ended by it (130 for SIGINT).
  int exit_code() const { return 128 + signal_; }
  /// "SIGINT" / "SIGTERM".
  std::string signal_name() const;

 private:
  int signal_;
};

/// Throws StopRequested(signal, how_to_resume) when a stop was requested.
void check_stop(const std::string& how_to_resume);

}  // namespace destein

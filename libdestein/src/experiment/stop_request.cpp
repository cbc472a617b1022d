#include "experiment/stop_request.hpp"

#include <csignal>

namespace destein {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void record_signal(int sig) { g_signal = sig; }

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a signal during a read or write resumes it instead of failing it with EINTR;
  // SA_RESETHAND: a second signal takes the default action and ends the process.
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int stop_signal() { return g_signal; }

StopRequested::StopRequested(int signal, const std::string& message)
    : std::runtime_error(message), signal_(signal) {}

std::string StopRequested::signal_name() const {
  return signal_ == SIGINT    ? "SIGINT"
         : signal_ == SIGTERM ? "SIGTERM"
                              : "signal " + std::to_string(signal_);
}

void check_stop(const std::string& how_to_resume) {
  if (const int sig = g_signal) throw StopRequested(sig, how_to_resume);
}

}  // namespace destein

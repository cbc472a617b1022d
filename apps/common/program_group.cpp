#include "program_group.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <stdexcept>

namespace destein::app {
namespace {
const ProcessGroup* registered = nullptr;
}  // namespace

const ProcessGroup& program_group() {
  static const SingleProcess single;
  return registered ? *registered : single;
}

void set_program_group(const ProcessGroup* group) { registered = group; }

std::string rank_prefix() {
  const ProcessGroup& g = program_group();
  return g.size() > 1 ? g.describe() + ": " : "";
}

int end_failed_rank(int code) {
  const ProcessGroup& g = program_group();
  if (g.size() > 1) {
    std::fflush(stdout);
    std::fflush(stderr);
    g.abort(code);
  }
  return code;
}

void require_single_process(const std::string& command) {
  const ProcessGroup& g = program_group();
  if (g.size() > 1) {
    throw std::invalid_argument(
        fmt::format("{} runs on one process, but this is {}: start it without mpirun (only bench "
                    "run, pairs and vectors are "
                    "sharded)",
                    command, g.describe()));
  }
}

}  // namespace destein::app

// Runs a benchmark's Python baseline (Debian's python3 with python3-torch) and returns the
// one JSON object it prints, so each benchmark can print a side-by-side ratio.
#pragma once

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace destein::bench {

/// `/usr/bin/python3 <source>/benchmarks/<script> <arguments>`; throws std::runtime_error
/// with the command when it cannot start, fails, or prints no JSON.
inline nlohmann::json run_python_baseline(const std::string& script, const std::string& arguments) {
  const std::string cmd =
      fmt::format("/usr/bin/python3 {}/benchmarks/{} {}", DESTEIN_SOURCE_DIR, script, arguments);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot start " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  if (pclose(pipe) != 0) throw std::runtime_error("the PyTorch baseline failed: " + cmd);
  try {
    return nlohmann::json::parse(out);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(
        fmt::format("the PyTorch baseline printed no JSON ({}): {}", e.what(), cmd));
  }
}

}  // namespace destein::bench

// Shared helpers of the runtime tests.
#pragma once

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace destein::test {

inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(DESTEIN_TEST_BINARY_DIR) / "fixtures" / name;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// A file's bytes ("" when it cannot be read).
inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A fresh empty folder under the build tree.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::path(DESTEIN_TEST_BINARY_DIR) / "tmp" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r{-1, {}};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline const char* kFamilies[] = {"gpt2", "llama",    "mistral",    "opt", "opt_postln_proj",
                                  "mpt",  "mpt_qkln", "mpt_learned"};

}  // namespace destein::test

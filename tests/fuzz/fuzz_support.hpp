// Shared helpers of the libFuzzer targets: inputs that the code under test reads from a
// file go through one temporary file per process.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace destein::fuzz {

inline std::filesystem::path write_input(const uint8_t* data, size_t size, const char* suffix) {
  static const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                            ("destein-fuzz-" + std::to_string(getpid()) + suffix);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

}  // namespace destein::fuzz

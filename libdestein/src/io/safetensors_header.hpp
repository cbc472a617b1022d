#pragma once
/// The safetensors header (https://github.com/huggingface/safetensors): an 8-byte
/// little-endian length, then a JSON object naming each tensor's dtype, shape and byte
/// range in the data section that follows. Reading and checking it needs no LibTorch, so
/// every reader of the format (tensors, the scorer's weights) shares one validation.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace destein {

/// One tensor of the header. Byte offsets are relative to the start of the data section.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  ///< "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;        ///< in the header's key order
  std::map<std::string, std::string> metadata;  ///< "__metadata__"; non-string values as JSON text
  uint64_t data_start = 0;                      ///< file offset of the data section
  uint64_t data_size = 0;                       ///< bytes in the data section
};

/// Bytes per element of a safetensors dtype name; 0 for a name the format does not define
/// (or that we do not read).
std::size_t safetensors_dtype_size(std::string_view dtype);

/// Parses and checks a header's JSON text against a data section of `data_size` bytes:
/// every entry is an object with a known dtype (string), a shape of non-negative integers,
/// and data_offsets [begin, end] inside the data section whose length is exactly
/// elements x dtype size. Throws std::runtime_error that starts with `where` (the file
/// name) and names the tensor and what was expected.
SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                           const std::string& where);

/// Reads the length prefix and the header of a file and checks them (a header longer than
/// the file, or than `max_header_bytes`, is refused before it is allocated).
SafetensorsHeader read_safetensors_header(const std::filesystem::path& path,
                                          uint64_t max_header_bytes = uint64_t{1} << 30);

}  // namespace destein

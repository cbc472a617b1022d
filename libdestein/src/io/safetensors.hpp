#pragma once
/// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
/// an 8-byte little-endian header length, a JSON header, then raw little-endian data.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>

namespace destein {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;    ///< CPU tensors, dtypes as stored
  std::map<std::string, std::string> metadata;  ///< the header's "__metadata__"
};

/// Reads every tensor of a .safetensors file (F64, F32, F16, BF16, I64, I32, I16, I8, U8,
/// BOOL). Throws std::runtime_error naming the file for a missing, truncated or
/// malformed file (bad header length, offsets out of range, unknown dtype, shape/size
/// mismatch).
SafetensorsFile read_safetensors(const std::filesystem::path& path);

/// Writes tensors (moved to CPU, made contiguous) with string metadata. Writes to a
/// temporary file and renames it, so a crash never leaves a half-written file.
void write_safetensors(const std::filesystem::path& path,
                       const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace destein

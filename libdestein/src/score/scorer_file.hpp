// Private: the file format of the linear scorers (v1 LinearScorer, v2 AttributeScorer). A
// safetensors file whose header is read and checked by io/safetensors_header (dtypes,
// shapes, offsets inside the data section); on top of that every scorer file has the
// metadata format "destein.linear_scorer", a format_version, its feature options, an
// FNV-1a checksum of the tensor data and self-test samples, all checked on load.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "check.hpp"
#include "destein/score/linear_scorer.hpp"
#include "io/safetensors_header.hpp"

namespace destein::detail {

/// The format name of every linear scorer file (v1 and v2); the version is a separate key.
inline constexpr const char* kScorerFileFormat = "destein.linear_scorer";

/// A scorer file read whole, its header checked as safetensors and as a destein linear
/// scorer's (the format only; the version is the caller's to check).
struct ScorerFile {
  std::string file;          // the path, for messages
  std::string bytes;         // the whole file
  SafetensorsHeader header;  // header.data_start: where the tensor data begins in `bytes`

  /// A metadata value, or `fallback` when the key is missing.
  std::string meta(const std::string& key, const std::string& fallback = "<none>") const;
  /// A metadata value parsed as JSON; throws std::runtime_error naming the file and the key
  /// when it is missing or not JSON.
  nlohmann::json meta_json(const std::string& key) const;
  /// Checks that tensor `name` exists with this dtype ("F16" or "F32"), shape [length] and
  /// data_offsets [begin, begin + its bytes].
  void check_tensor(const std::string& name, const std::string& dtype, int64_t length,
                    uint64_t begin) const;
  /// Checks that the data section holds exactly `data_bytes` and matches the stored
  /// checksum; returns its first byte.
  const unsigned char* checked_data(uint64_t data_bytes) const;
};

/// Reads and checks a scorer file; throws std::runtime_error naming the file and what was
/// expected when it is missing, truncated, not safetensors or of another format.
ScorerFile read_scorer_file(const std::filesystem::path& path);

/// Writes a scorer file: the header (tensor entries and __metadata__, keys sorted, padded
/// with spaces to 8 bytes) and the data, through a temporary file and a rename, so that an
/// interrupted save never leaves half a model behind.
void write_scorer_file(const std::filesystem::path& path, const nlohmann::json& header,
                       const std::string& data);

/// The checksum stored under metadata "checksum_fnv1a64": FNV-1a 64 of the data, 16 hex
/// digits.
std::string data_checksum(const char* data, size_t size);

/// Little-endian encodings of the tensor data: f16 weights and f32 biases.
void append_f16(std::string& out, const std::vector<float>& values);
void append_f32(std::string& out, float value);
/// Reads `count` f16 values from `p`, widened to f32; advances `p`.
std::vector<float> read_f16(const unsigned char*& p, size_t count);
/// Reads one f32 from `p`; advances `p`.
float read_f32(const unsigned char*& p);

/// JSON text as stored in the metadata (compact; invalid UTF-8 replaced, not thrown on).
std::string dump(const nlohmann::json& j);

/// The feature options as stored in a file ("features"), with the feature-code id.
nlohmann::json feature_json(const LinearFeatureOptions& o);
/// Reads and checks the `features` metadata of a scorer file (code id, ranges).
LinearFeatureOptions read_feature_json(const nlohmann::json& features, const std::string& file);

/// j[key] as T; throws std::runtime_error naming `where` and the key when missing or mistyped.
template <typename T>
T json_field(const nlohmann::json& j, const std::string& key, const std::string& where) {
  DESTEIN_CHECK_IO(j.is_object() && j.contains(key), "{}: expected key '{}'", where, key);
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    DESTEIN_CHECK_IO(false, "{}: key '{}' has the wrong type ({})", where, key, j[key].type_name());
  }
  return T{};
}

}  // namespace destein::detail

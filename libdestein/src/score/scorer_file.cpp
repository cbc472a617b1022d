#include "scorer_file.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <Eigen/Core>
#include <cstring>
#include <fstream>
#include <sstream>

#include "fnv1a.hpp"
#include "io/file_io.hpp"
#include "text_features.hpp"

namespace destein::detail {

namespace {

uint64_t get_u64_le(const std::string& in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  }
  return v;
}

void put_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

}  // namespace

std::string ScorerFile::meta(const std::string& key, const std::string& fallback) const {
  const auto it = header.metadata.find(key);
  return it == header.metadata.end() ? fallback : it->second;
}

nlohmann::json ScorerFile::meta_json(const std::string& key) const {
  const auto it = header.metadata.find(key);
  DESTEIN_CHECK_IO(it != header.metadata.end(), "{}: expected metadata key '{}', found none", file,
                   key);
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    DESTEIN_CHECK_IO(false, "{}: metadata '{}' is not valid JSON ({}): the file is corrupt", file,
                     key, e.what());
  }
  return {};
}

void ScorerFile::check_tensor(const std::string& name, const std::string& dtype, int64_t length,
                              uint64_t begin) const {
  // parse_safetensors_header checked each entry's dtype, shape and offsets against the data
  // section; what is left is that the tensor is the one this scorer expects, where expected.
  const SafetensorsEntry* t = nullptr;
  for (const auto& e : header.tensors) {
    if (e.name == name) t = &e;
  }
  DESTEIN_CHECK_IO(t != nullptr, "{}: expected a tensor '{}', found none", file, name);
  const std::string where = fmt::format("{}: tensor '{}'", file, name);
  DESTEIN_CHECK_IO(t->dtype == dtype, "{}: expected dtype {}, found {}", where, dtype, t->dtype);
  DESTEIN_CHECK_IO(t->shape == std::vector<int64_t>{length},
                   "{}: expected shape [{}] (from features.hash_bits), found [{}]", where, length,
                   fmt::join(t->shape, ", "));
  const uint64_t bytes = static_cast<uint64_t>(length) * safetensors_dtype_size(dtype);
  DESTEIN_CHECK_IO(t->begin == begin && t->end == begin + bytes,
                   "{}: expected data_offsets [{}, {}], found [{}, {}]", where, begin,
                   begin + bytes, t->begin, t->end);
}

const unsigned char* ScorerFile::checked_data(uint64_t data_bytes) const {
  DESTEIN_CHECK_IO(header.data_size == data_bytes,
                   "{}: expected {} bytes of tensor data after the header, found {} (truncated or "
                   "corrupt file)",
                   file, data_bytes, header.data_size);
  const char* data = bytes.data() + header.data_start;
  const std::string expected_sum = meta("checksum_fnv1a64");
  const std::string found_sum = data_checksum(data, data_bytes);
  DESTEIN_CHECK_IO(expected_sum == found_sum, "{}: corrupt weights: checksum expected {}, found {}",
                   file, expected_sum, found_sum);
  return reinterpret_cast<const unsigned char*>(data);
}

ScorerFile read_scorer_file(const std::filesystem::path& path) {
  ScorerFile f;
  f.file = path.string();
  const std::string& file = f.file;
  DESTEIN_CHECK_IO(std::filesystem::is_regular_file(path),
                   "scorer file '{}' not found (train one with `destein train-scorer`, or pass "
                   "--scorer)",
                   file);
  const auto file_size = std::filesystem::file_size(path);
  DESTEIN_CHECK_IO(file_size <= (uint64_t{1} << 30),
                   "{}: {} bytes is too large for a linear scorer file (foreign file?)", file,
                   file_size);
  {
    std::ifstream in(path, std::ios::binary);
    DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", file);
    std::ostringstream buffer;
    buffer << in.rdbuf();
    f.bytes = buffer.str();
  }
  DESTEIN_CHECK_IO(f.bytes.size() >= 8,
                   "{}: not a scorer file: {} bytes is too short for a safetensors header", file,
                   f.bytes.size());
  const uint64_t header_len = get_u64_le(f.bytes);
  DESTEIN_CHECK_IO(header_len <= f.bytes.size() - 8 && header_len <= (uint64_t{1} << 24),
                   "{}: not a scorer file: its first 8 bytes give a header of {} bytes, but the "
                   "file has {} (truncated, or not a safetensors file)",
                   file, header_len, f.bytes.size());
  f.header = parse_safetensors_header(std::string_view(f.bytes).substr(8, header_len),
                                      f.bytes.size() - 8 - header_len, file);
  f.header.data_start = 8 + header_len;
  DESTEIN_CHECK_IO(!f.header.metadata.empty(),
                   "{}: expected a safetensors header with __metadata__, found none (a foreign "
                   "safetensors file?)",
                   file);
  const std::string format = f.meta("format");
  DESTEIN_CHECK_IO(format == kScorerFileFormat,
                   "{}: expected format '{}', found '{}': this is not a destein linear scorer",
                   file, kScorerFileFormat, format);
  return f;
}

void write_scorer_file(const std::filesystem::path& path, const nlohmann::json& header,
                       const std::string& data) {
  std::string header_text = dump(header);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string bytes;
  put_u64_le(bytes, header_text.size());
  bytes += header_text;
  bytes += data;
  write_text_file(path, bytes);
}

std::string data_checksum(const char* data, size_t size) {
  return fmt::format("{:016x}", fnv1a64(data, size));
}

void append_f16(std::string& out, const std::vector<float>& values) {
  for (float v : values) {
    const uint16_t bits = Eigen::numext::bit_cast<uint16_t>(Eigen::half(v));
    out += static_cast<char>(bits & 0xFF);
    out += static_cast<char>(bits >> 8);
  }
}

void append_f32(std::string& out, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  for (int i = 0; i < 4; ++i) out += static_cast<char>((bits >> (8 * i)) & 0xFF);
}

std::vector<float> read_f16(const unsigned char*& p, size_t count) {
  std::vector<float> values(count);
  for (float& v : values) {
    const uint16_t bits = static_cast<uint16_t>(p[0] | (p[1] << 8));
    v = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
    p += 2;
  }
  return values;
}

float read_f32(const unsigned char*& p) {
  uint32_t bits = 0;
  for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(p[i]) << (8 * i);
  p += 4;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json feature_json(const LinearFeatureOptions& o) {
  return {{"code", kFeatureCode},
          {"hash_bits", o.hash_bits},
          {"word_ngram_max", o.word_ngram_max},
          {"char_ngram_min", o.char_ngram_min},
          {"char_ngram_max", o.char_ngram_max},
          {"value", o.value},
          {"normalization", "l2"}};
}

LinearFeatureOptions read_feature_json(const nlohmann::json& features, const std::string& file) {
  const std::string fwhere = file + ": metadata 'features'";
  const auto code = json_field<std::string>(features, "code", fwhere);
  DESTEIN_CHECK_IO(code == kFeatureCode,
                   "{}: expected feature code '{}', found '{}': the file was trained with other "
                   "tokenisation or hashing; retrain it",
                   fwhere, kFeatureCode, code);
  LinearFeatureOptions o;
  o.hash_bits = json_field<int>(features, "hash_bits", fwhere);
  o.word_ngram_max = json_field<int>(features, "word_ngram_max", fwhere);
  o.char_ngram_min = json_field<int>(features, "char_ngram_min", fwhere);
  o.char_ngram_max = json_field<int>(features, "char_ngram_max", fwhere);
  o.value = json_field<std::string>(features, "value", fwhere);
  try {
    check_feature_options(o);
  } catch (const std::invalid_argument& e) {
    DESTEIN_CHECK_IO(false, "{}: {}", fwhere, e.what());
  }
  return o;
}

}  // namespace destein::detail

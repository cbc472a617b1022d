#include "io/safetensors_header.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>

#include "check.hpp"

namespace destein {

std::size_t safetensors_dtype_size(std::string_view dtype) {
  struct Size {
    std::string_view name;
    std::size_t bytes;
  };
  static constexpr Size kSizes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                    {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
  for (const auto& s : kSizes) {
    if (dtype == s.name) return s.bytes;
  }
  return 0;
}

SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                           const std::string& where) {
  const nlohmann::json header =
      nlohmann::json::parse(header_json, nullptr, /*allow_exceptions=*/false);
  DESTEIN_CHECK_IO(!header.is_discarded(), "{}: malformed safetensors header (not valid JSON)",
                   where);
  DESTEIN_CHECK_IO(header.is_object(), "{}: safetensors header is not a JSON object", where);

  SafetensorsHeader out;
  out.data_size = data_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      DESTEIN_CHECK_IO(entry.is_object(), "{}: __metadata__ must be an object of strings", where);
      for (const auto& [k, v] : entry.items()) {
        // Invalid UTF-8 in a value is replaced, not thrown on, when shown as JSON text.
        out.metadata[k] = v.is_string()
                              ? v.get<std::string>()
                              : v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
      continue;
    }
    const std::string tensor = fmt::format("{}: tensor '{}'", where, name);
    DESTEIN_CHECK_IO(entry.is_object() && entry.contains("dtype") && entry.contains("shape") &&
                         entry.contains("data_offsets"),
                     "{}: entry needs dtype, shape and data_offsets", tensor);
    SafetensorsEntry e;
    e.name = name;
    const auto& dtype = entry["dtype"];
    DESTEIN_CHECK_IO(dtype.is_string(), "{}: dtype must be a string", tensor);
    e.dtype = dtype.get<std::string>();
    const std::size_t element_size = safetensors_dtype_size(e.dtype);
    DESTEIN_CHECK_IO(
        element_size > 0,
        "{}: unsupported dtype '{}' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)",
        tensor, e.dtype);

    const auto& shape = entry["shape"];
    DESTEIN_CHECK_IO(shape.is_array(), "{}: shape must be an array of non-negative integers",
                     tensor);
    // Elements are counted against the data section as we go, so a huge shape is refused
    // before any product can overflow.
    uint64_t elements = 1;
    for (const auto& d : shape) {
      DESTEIN_CHECK_IO(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                       "{}: shape must be an array of non-negative integers, found {}", tensor,
                       shape.dump());
      const uint64_t dim = d.get<uint64_t>();
      DESTEIN_CHECK_IO(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                       "{}: dimension {} is too large", tensor, dim);
      e.shape.push_back(static_cast<int64_t>(dim));
      if (elements != 0 && dim != 0) {
        DESTEIN_CHECK_IO(dim <= data_size / elements,
                         "{}: shape {} needs more bytes than the data section holds ({}); the "
                         "file may be truncated",
                         tensor, shape.dump(), data_size);
      }
      elements *= dim;
    }

    const auto& offsets = entry["data_offsets"];
    DESTEIN_CHECK_IO(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                         offsets[1].is_number_unsigned(),
                     "{}: data_offsets must be [begin, end], two non-negative integers", tensor);
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
    DESTEIN_CHECK_IO(e.begin <= e.end && e.end <= data_size,
                     "{}: data_offsets [{}, {}] out of range (data section holds {} bytes; the "
                     "file may be truncated)",
                     tensor, e.begin, e.end, data_size);
    const uint64_t nbytes = elements * element_size;  // <= data_size * 8: cannot overflow
    DESTEIN_CHECK_IO(nbytes == e.end - e.begin,
                     "{}: shape {} needs {} bytes but data_offsets span {}", tensor, shape.dump(),
                     nbytes, e.end - e.begin);
    out.tensors.push_back(std::move(e));
  }
  return out;
}

SafetensorsHeader read_safetensors_header(const std::filesystem::path& path,
                                          uint64_t max_header_bytes) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "{}: cannot open safetensors file", file);
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  DESTEIN_CHECK_IO(end >= 0, "{}: cannot read the file size", file);
  const uint64_t file_size = static_cast<uint64_t>(end);
  in.seekg(0);
  DESTEIN_CHECK_IO(file_size >= 8, "{}: not a safetensors file (only {} bytes)", file, file_size);

  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  DESTEIN_CHECK_IO(header_len <= file_size - 8 && header_len <= max_header_bytes,
                   "{}: not a safetensors file or truncated (its first 8 bytes give a header of {} "
                   "bytes for a file of {})",
                   file, header_len, file_size);
  std::string header_text(header_len, '\0');
  in.read(header_text.data(), static_cast<std::streamsize>(header_len));
  DESTEIN_CHECK_IO(in.good(), "{}: read failed in the header", file);
  SafetensorsHeader header =
      parse_safetensors_header(header_text, file_size - 8 - header_len, file);
  header.data_start = 8 + header_len;
  return header;
}

}  // namespace destein

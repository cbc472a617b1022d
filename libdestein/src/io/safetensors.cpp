#include "io/safetensors.hpp"
#include "io/file_io.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include "check.hpp"
#include "io/safetensors_header.hpp"

namespace destein {
namespace {

struct DtypeInfo {
  const char* name;
  c10::ScalarType type;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", c10::kDouble}, {"F32", c10::kFloat}, {"F16", c10::kHalf},  {"BF16", c10::kBFloat16},
    {"I64", c10::kLong},   {"I32", c10::kInt},   {"I16", c10::kShort}, {"I8", c10::kChar},
    {"U8", c10::kByte},    {"BOOL", c10::kBool},
};

c10::ScalarType dtype_from_name(const std::string& name, const std::string& where) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  throw std::runtime_error(fmt::format("{}: unsupported dtype '{}'", where, name));
}

const char* dtype_to_name(c10::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return d.name;
  }
  throw std::invalid_argument(
      fmt::format("safetensors: cannot store dtype {}", c10::toString(type)));
}

}  // namespace

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const std::string file = path.string();
  const SafetensorsHeader header = read_safetensors_header(path);
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "{}: cannot open safetensors file", file);
  SafetensorsFile out;
  out.metadata = header.metadata;
  for (const auto& entry : header.tensors) {
    const std::string where = fmt::format("{}: tensor '{}'", file, entry.name);
    at::Tensor t =
        at::empty(entry.shape, at::TensorOptions().dtype(dtype_from_name(entry.dtype, where)));
    const uint64_t nbytes = entry.end - entry.begin;  // checked against the shape by the header
    in.seekg(static_cast<std::streamoff>(header.data_start + entry.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
    DESTEIN_CHECK_IO(in.good(), "{}: read failed (truncated file?)", where);
    out.tensors.emplace(entry.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> ordered;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    DESTEIN_CHECK_ARG(tensor.defined(), "write_safetensors: tensor '{}' is undefined", name);
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_to_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    ordered.push_back(t);
  }
  std::string header_text = header.dump();
  // The format asks for the data to start 8-byte aligned; pad the header with spaces.
  while (header_text.size() % 8 != 0) header_text.push_back(' ');

  write_file_atomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DESTEIN_CHECK_IO(out.good(), "{}: cannot open for writing", tmp.string());
    uint64_t len = header_text.size();
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((len >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const auto& t : ordered) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.flush();
    DESTEIN_CHECK_IO(out.good(), "{}: write failed (disk full?)", tmp.string());
  });
}

}  // namespace destein

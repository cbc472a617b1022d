// The safetensors header reader on hand-written files: the byte layout is built here from
// the format's definition (8-byte little-endian length, JSON, data), not by our writer.
#include <catch2/catch.hpp>

#include <fstream>

#include "io/safetensors_header.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

fs::path write_file(const std::string& name, const std::string& header, size_t data_bytes) {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "safetensors_header_tmp";
  fs::create_directories(dir);
  std::string bytes;
  for (int i = 0; i < 8; ++i)
    bytes.push_back(static_cast<char>((uint64_t(header.size()) >> (8 * i)) & 0xff));
  bytes += header;
  bytes.append(data_bytes, '\x01');
  std::ofstream(dir / name, std::ios::binary) << bytes;
  return dir / name;
}

}  // namespace

TEST_CASE("a well-formed header gives each tensor's dtype, shape and byte range", "[safetensors]") {
  const auto path = write_file(
      "ok.safetensors",
      R"({"__metadata__":{"format":"x","n":3},"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("b":{"dtype":"I64","shape":[],"data_offsets":[12,20]},"e":{"dtype":"F32","shape":[0,5],"data_offsets":[20,20]}})",
      20);
  const auto h = destein::read_safetensors_header(path);
  REQUIRE(h.tensors.size() == 3);
  CHECK(h.metadata.at("format") == "x");
  CHECK(h.metadata.at("n") == "3");  // a non-string value is kept as its JSON text
  // 8 bytes of length + the header's own length.
  CHECK(
      h.data_start ==
      8 + std::string(
              R"({"__metadata__":{"format":"x","n":3},"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
              R"("b":{"dtype":"I64","shape":[],"data_offsets":[12,20]},"e":{"dtype":"F32","shape":[0,5],"data_offsets":[20,20]}})")
              .size());
  CHECK(h.data_size == 20);
  const auto* w = &h.tensors[0];
  for (const auto& t : h.tensors)
    if (t.name == "w") w = &t;
  CHECK(w->dtype == "F16");
  CHECK(w->shape == std::vector<int64_t>{2, 3});
  CHECK(w->begin == 0);
  CHECK(w->end == 12);
  CHECK(destein::safetensors_dtype_size("BF16") == 2);
  CHECK(destein::safetensors_dtype_size("F8_E4M3") == 0);
}

TEST_CASE("a bad header is refused with the file, the tensor and what was expected",
          "[safetensors]") {
  struct Case {
    const char* header;
    size_t data;
    const char* message;
  };
  const Case cases[] = {
      {"not json", 0, "malformed safetensors header"},
      {"[1,2]", 0, "not a JSON object"},
      {R"({"w":{"dtype":"F32","shape":[1]}})", 4,
       "tensor 'w': entry needs dtype, shape and data_offsets"},
      {R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4, "dtype must be a string"},
      {R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,4]}})", 4, "unsupported dtype 'F8'"},
      {R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "non-negative integers"},
      {R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,4]}})", 4, "shape must be an array"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4,
       "needs 8 bytes but data_offsets span 4"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,12]}})", 8,
       "out of range (data section holds 8 bytes"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8, "out of range"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4,
       "data_offsets must be [begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", 4,
       "data_offsets must be [begin, end]"},
      // Dimensions whose product overflows 64 bits are refused before they are multiplied.
      {R"({"w":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0,
       "needs more bytes than the data section"},
      {R"({"__metadata__":[1],"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4,
       "__metadata__ must be an object"},
  };
  int i = 0;
  for (const auto& c : cases) {
    const auto path = write_file("bad" + std::to_string(i++) + ".safetensors", c.header, c.data);
    INFO(c.header);
    CHECK_THROWS_WITH(destein::read_safetensors_header(path),
                      Contains(path.filename().string()) && Contains(c.message));
  }
}

TEST_CASE("a length prefix longer than the file or the limit is refused before allocating",
          "[safetensors]") {
  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "safetensors_header_tmp";
  fs::create_directories(dir);
  std::ofstream(dir / "short.safetensors", std::ios::binary) << "abc";
  CHECK_THROWS_WITH(destein::read_safetensors_header(dir / "short.safetensors"),
                    Contains("only 3 bytes"));
  // Length 0xffffffffffffffff with 4 bytes after it.
  std::ofstream(dir / "huge.safetensors", std::ios::binary) << std::string(8, '\xff') << "{}  ";
  CHECK_THROWS_WITH(
      destein::read_safetensors_header(dir / "huge.safetensors"),
      Contains("huge.safetensors") && Contains("header of 18446744073709551615 bytes"));
  const auto path = write_file("limit.safetensors", "{}      ", 0);
  CHECK(destein::read_safetensors_header(path).tensors.empty());
  CHECK_THROWS_WITH(destein::read_safetensors_header(path, 4), Contains("header of 8 bytes"));
  CHECK_THROWS_WITH(destein::read_safetensors_header(dir / "missing.safetensors"),
                    Contains("missing.safetensors: cannot open"));
}

// The safetensors header reader (every safetensors file we read goes through it: model
// weights, steering vectors) on arbitrary bytes: a length prefix, JSON, offsets and shapes
// chosen by the fuzzer. Every failure must be a std::exception, never a crash, an
// allocation of the claimed size, or a sanitizer report.
#include <exception>

#include "fuzz_support.hpp"
#include "io/safetensors_header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = destein::fuzz::write_input(data, size, ".safetensors");
  try {
    const auto header = destein::read_safetensors_header(path, /*max_header_bytes=*/1 << 20);
    for (const auto& t : header.tensors) {
      // What the reader promised: each range inside the data section, sized by its shape.
      if (t.end > header.data_size || t.begin > t.end) __builtin_trap();
      uint64_t n = destein::safetensors_dtype_size(t.dtype);
      for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
      if (n != t.end - t.begin) __builtin_trap();
    }
  } catch (const std::exception&) {
  }
  // The JSON alone, against a data section of every small size.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (uint64_t data_size : {uint64_t{0}, uint64_t{8}, uint64_t{1} << 40}) {
    try {
      (void)destein::parse_safetensors_header(text, data_size, "fuzz");
    } catch (const std::exception&) {
    }
  }
  return 0;
}

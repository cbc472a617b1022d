// Private: FNV-1a 64 (Fowler, Noll, Vo), the one byte-string hash of the library: cache
// keys, file checksums, overlap keys, the scorer's feature hashing. Fast and fully
// specified; not for anything an adversary chooses.
#pragma once

#include <cstddef>
#include <cstdint>

namespace destein::detail {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

/// FNV-1a 64 of `n` bytes, continuing from `h` (the offset basis for a fresh hash).
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

}  // namespace destein::detail

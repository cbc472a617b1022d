// Private: the inverse of splitmix64 (splitmix.hpp). A sharded self-induction uses it to
// give a rank's prompts, through GenerationOptions::prompt_seeds, exactly the random
// streams the one-process call gives them by their global index.
#pragma once

#include <cstdint>

#include "splitmix.hpp"

namespace destein::detail {

/// The inverse of mix64 (each step of the finaliser is a bijection on 64 bits).
inline uint64_t unmix64(uint64_t z) {
  // x ^= x >> k is undone by y ^ (y >> k) ^ (y >> 2k) ...; a multiplication by an odd
  // constant by its inverse mod 2^64 (Newton's iteration doubles the correct bits).
  constexpr auto inverse = [](uint64_t a) {
    uint64_t x = a;
    for (int i = 0; i < 5; ++i) x *= 2 - a * x;
    return x;
  };
  z = z ^ (z >> 31) ^ (z >> 62);
  z *= inverse(0x94d049bb133111ebULL);
  z = z ^ (z >> 27) ^ (z >> 54);
  z *= inverse(0xbf58476d1ce4e5b9ULL);
  return z ^ (z >> 30) ^ (z >> 60);
}

/// The x with splitmix64(x) == h.
inline uint64_t unsplitmix64(uint64_t h) { return unmix64(h) - kGoldenGamma; }

}  // namespace destein::detail

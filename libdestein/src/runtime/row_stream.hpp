// Private: the random stream of one generated row, shared by generate() and the serving
// engine (serve/batch_engine.cpp) so that a seeded request gives the text generate() gives.
#pragma once

#include <cstdint>
#include <random>

#include "splitmix.hpp"

namespace destein::detail {

/// The stream of row (prompt p, sample s) for `seed`: independent of batching.
inline std::mt19937_64 row_stream(uint64_t seed, int64_t p, int64_t s) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<uint64_t>(p));
  h = splitmix64(h ^ (static_cast<uint64_t>(s) * 0x632be59bd9b4e019ULL));
  return std::mt19937_64(h);
}

/// A uniform draw in [0, 1) with 53 random bits.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace destein::detail

// Private: splitmix64 (Steele, Lea, Flood 2014), the one seeded mixer of the library.
// Fully specified, so a seed gives the same pairs, folds and sampling streams on every
// platform, which <random>'s distributions do not promise.
#pragma once

#include <cstdint>

namespace destein::detail {

constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

/// The splitmix64 output function (finaliser) alone.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// One stateless splitmix64 step: hash of `x`.
inline uint64_t splitmix64(uint64_t x) { return mix64(x + kGoldenGamma); }

/// A splitmix64 stream.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix64(state_ += kGoldenGamma); }
  /// Uniform in [0, bound) without modulo bias: reject the few lowest draws that would
  /// make some residues more likely.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace destein::detail

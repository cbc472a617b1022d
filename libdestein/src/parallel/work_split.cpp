#include "parallel/work_split.hpp"

#include <algorithm>

#include "check.hpp"

namespace destein {

int batch_owner(int64_t batch, int size) {
  DESTEIN_CHECK_ARG(size > 0 && batch >= 0, "batch_owner: batch {} over {} ranks", batch, size);
  return static_cast<int>(batch % size);
}

std::pair<int64_t, int64_t> shard_range(int64_t units, int rank, int size) {
  DESTEIN_CHECK_ARG(
      size > 0 && rank >= 0 && rank < size && units >= 0,
      "shard_range: rank {} of {} over {} units (expected 0 <= rank < size, units >= 0)", rank,
      size, units);
  const int64_t base = units / size, extra = units % size;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace destein

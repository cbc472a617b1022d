#include "parallel/rank_placement.hpp"

#include <algorithm>

#include "check.hpp"

namespace destein {

std::string rank_device(const std::string& device, int local_rank, int device_count) {
  if (device != "cuda") return device;
  DESTEIN_CHECK_ARG(device_count > 0,
                    "device cuda asked for, but this machine has no CUDA device; use device: cpu");
  return "cuda:" + std::to_string(local_rank % device_count);
}

int rank_threads(int threads, int local_size, int hardware_threads) {
  if (threads > 0) return threads;
  return std::max(1, hardware_threads / std::max(1, local_size));
}

}  // namespace destein

#pragma once
/// Where each rank of a sharded run computes: its GPU and its CPU threads, from the model
/// section's `device` and `threads` and the rank's place on its machine.

#include <string>

namespace destein {

/// `device: cuda` (no index) on a rank: `cuda:(local_rank mod device_count)`, so the
/// ranks of one machine spread over its GPUs. An explicit `cuda:K` and `cpu` are kept.
/// Throws std::invalid_argument for cuda with device_count < 1.
std::string rank_device(const std::string& device, int local_rank, int device_count);

/// `threads: 0` (all cores) on a rank: max(1, hardware_threads / local_size), so that the
/// ranks of one machine share its cores instead of each taking all of them. A positive
/// value is kept.
int rank_threads(int threads, int local_size, int hardware_threads);

}  // namespace destein

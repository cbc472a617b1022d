// Private: this process's resident memory (Linux /proc/self), for the bench's cost table.
#pragma once

namespace destein {

struct ResidentMemory {
  double current_mib = -1;  ///< VmRSS; -1 when /proc cannot tell
  double peak_mib = -1;     ///< VmHWM: the high-water mark since start or the last reset
};

ResidentMemory resident_memory();

/// Resets the high-water mark to the current resident size (writes 5 to
/// /proc/self/clear_refs, Linux 4.0 and later), so that the next peak is a stage's own.
/// False when the kernel refused.
bool reset_peak_resident_memory();

}  // namespace destein

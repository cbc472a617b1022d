#include "experiment/process_memory.hpp"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace destein {

ResidentMemory resident_memory() {
  ResidentMemory m;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    // "VmRSS:\t  123456 kB"
    const bool rss = line.rfind("VmRSS:", 0) == 0, hwm = line.rfind("VmHWM:", 0) == 0;
    if (!rss && !hwm) continue;
    const double mib = std::strtod(line.c_str() + 6, nullptr) / 1024.0;
    (rss ? m.current_mib : m.peak_mib) = mib;
  }
  return m;
}

bool reset_peak_resident_memory() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace destein

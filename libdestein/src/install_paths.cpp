#include "install_paths.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>

namespace destein::detail {

std::filesystem::path library_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&library_directory), &info) == 0 || info.dli_fname == nullptr)
    return {};
  std::error_code ec;
  auto path = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::filesystem::path() : path.parent_path();
}

std::filesystem::path installed_data_file(const std::filesystem::path& relative) {
  const auto dir = library_directory();
  if (dir.empty()) return {};
  const auto candidate = dir / DESTEIN_LIB_TO_DATA / relative;
  std::error_code ec;
  return std::filesystem::is_regular_file(candidate, ec) ? candidate.lexically_normal()
                                                         : std::filesystem::path();
}

std::vector<std::filesystem::path> spm_module_candidates() {
  std::vector<std::filesystem::path> paths;
  if (const char* env = std::getenv("DESTEIN_SPM_LIBRARY"); env && *env) paths.emplace_back(env);
  // Installed: <libdir>/destein/libdestein_spm.so beside libdestein_base.so.
  if (const auto dir = library_directory(); !dir.empty()) {
    paths.push_back(dir / "destein" / "libdestein_spm.so");
    paths.push_back(dir / "libdestein_spm.so");  // the build tree keeps both in build/lib
  }
#ifdef DESTEIN_SPM_LIBRARY_PATH
  paths.emplace_back(DESTEIN_SPM_LIBRARY_PATH);
#endif
  return paths;
}

}  // namespace destein::detail

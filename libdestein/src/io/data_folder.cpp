#include "io/data_folder.hpp"

#include <cstdlib>

#include "check.hpp"

namespace destein {

namespace fs = std::filesystem;

namespace {
// The configured folder, or the environment's, or the build's; with where it came from.
std::pair<fs::path, std::string> data_dir_candidate(const std::string& configured) {
  if (!configured.empty()) return {configured, "data_dir in the config or --data-dir"};
  if (const char* env = std::getenv("DESTEIN_DATA"); env && *env) return {env, "$DESTEIN_DATA"};
  return {DESTEIN_DEFAULT_DATA_DIR, "the build default DESTEIN_DEFAULT_DATA_DIR"};
}
}  // namespace

fs::path resolve_data_dir(const std::string& configured) {
  const auto [dir, origin] = data_dir_candidate(configured);
  DESTEIN_CHECK_IO(fs::is_directory(dir),
                   "data folder '{}' (from {}) does not exist; set data_dir in the config or "
                   "DESTEIN_DATA",
                   dir.string(), origin);
  return dir;
}

fs::path resolve_data_path(const std::string& relative, const std::string& data_dir) {
  fs::path p(relative);
  if (p.is_absolute()) return p;
  // A file this project wrote (runs/demo/pairs.jsonl) is found where the command runs.
  if (fs::exists(p)) return p;
  return data_dir_candidate(data_dir).first / p;
}

}  // namespace destein

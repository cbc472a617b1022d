#include "io/file_io.hpp"

#include <fstream>

#include "check.hpp"
#include "fnv1a.hpp"

namespace destein {
namespace {

std::optional<std::string> difference_at(const nlohmann::json& now, const nlohmann::json& before,
                                         const std::string& path) {
  if (now.is_object() && before.is_object()) {
    for (auto it = now.begin(); it != now.end(); ++it) {
      const std::string key = path.empty() ? it.key() : path + "." + it.key();
      if (!before.contains(it.key())) return key + ": absent before";
      if (auto d = difference_at(it.value(), before.at(it.key()), key)) return d;
    }
    return std::nullopt;
  }
  if (now == before) return std::nullopt;
  return fmt::format("{}: {} now, {} before", path.empty() ? "(top level)" : path, now.dump(),
                     before.dump());
}

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON ({})", path.string(), e.what()));
  }
}

void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(const std::filesystem::path& tmp)>& write) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  std::error_code ignored;
  try {
    write(tmp);
  } catch (...) {
    std::filesystem::remove(tmp, ignored);
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp, ignored);
  DESTEIN_CHECK_IO(!ec, "cannot move '{}' into place as '{}': {}", tmp.string(), path.string(),
                   ec.message());
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DESTEIN_CHECK_IO(out.good(), "cannot create '{}'", tmp.string());
    out << text;
    out.close();
    DESTEIN_CHECK_IO(out.good(), "failed writing '{}' (disk full or not writable?)", tmp.string());
  });
}

std::string file_fnv1a64(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DESTEIN_CHECK_IO(in.good(), "cannot open '{}' for reading", path.string());
  uint64_t h = detail::kFnvOffset;
  char buf[1 << 16];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0)
    h = detail::fnv1a64(buf, static_cast<size_t>(in.gcount()), h);
  DESTEIN_CHECK_IO(!in.bad(), "error while reading '{}'", path.string());
  return fmt::format("{:016x}", h);
}

std::optional<std::string> first_json_difference(const nlohmann::json& now,
                                                 const nlohmann::json& before) {
  return difference_at(now, before, "");
}

}  // namespace destein

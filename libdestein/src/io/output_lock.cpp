#include "io/output_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>

#include "check.hpp"

namespace destein {

OutputLock::OutputLock(OutputLock&& other) noexcept
    : fd_(other.fd_), lock_file_(std::move(other.lock_file_)) {
  other.fd_ = -1;
}

OutputLock& OutputLock::operator=(OutputLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    lock_file_ = std::move(other.lock_file_);
    other.fd_ = -1;
  }
  return *this;
}

OutputLock::~OutputLock() { release(); }

void OutputLock::release() {
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor drops the flock
  fd_ = -1;
}

namespace {

std::string program_name() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string out;
  for (size_t start = 0; start < cmdline.size() && out.size() < 200;) {
    const size_t end = cmdline.find('\0', start);
    const std::string arg =
        cmdline.substr(start, end == std::string::npos ? std::string::npos : end - start);
    out += (out.empty() ? "" : " ") +
           (start == 0 ? std::filesystem::path(arg).filename().string() : arg);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

std::string owner_line() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "?");
  const std::time_t now = std::time(nullptr);
  char since[32] = {0};
  std::strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return fmt::format("pid {} on host {}, running '{}', since {}", static_cast<long>(getpid()), host,
                     program_name(), since);
}

}  // namespace

OutputLock lock_output(const std::filesystem::path& target, const std::filesystem::path& lock_file,
                       const std::string& what) {
  if (lock_file.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(lock_file.parent_path(), ec);
    DESTEIN_CHECK_IO(!ec, "{}: cannot create the output folder: {}",
                     lock_file.parent_path().string(), ec.message());
  }
  const int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  DESTEIN_CHECK_IO(fd >= 0, "{}: cannot create the lock file of {} {}: {}", lock_file.string(),
                   what, target.string(), std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string owner;
    char buf[512];
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    if (n > 0) owner.assign(buf, static_cast<size_t>(n));
    while (!owner.empty() && (owner.back() == '\n' || owner.back() == '\0')) owner.pop_back();
    ::close(fd);
    DESTEIN_CHECK_IO(err == EWOULDBLOCK, "{}: cannot lock {}: {}", lock_file.string(), what,
                     std::strerror(err));
    throw std::runtime_error(
        fmt::format("{} {} is being written by another process ({}): two writers would corrupt "
                    "each other's files. Wait "
                    "for it to finish or stop it, or write to another output (lock file {})",
                    what, target.string(), owner.empty() ? "owner not yet recorded" : owner,
                    lock_file.string()));
  }
  // The owner for the next one's error message; the file may hold a dead owner's longer line.
  const std::string line = owner_line() + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error(
        fmt::format("{}: cannot write the lock file: {}", lock_file.string(), std::strerror(err)));
  }
  OutputLock lock;
  lock.fd_ = fd;
  lock.lock_file_ = lock_file;
  return lock;
}

OutputLock lock_output_folder(const std::filesystem::path& folder) {
  return lock_output(folder, folder / ".destein.lock", "output folder");
}

OutputLock lock_output_file(const std::filesystem::path& file) {
  return lock_output(file, file.string() + ".lock", "output file");
}

}  // namespace destein

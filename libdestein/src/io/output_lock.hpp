#pragma once
/// One writer per output: the commands that write an output folder or file (bench run,
/// pairs, vectors, train-lm, train-scorer) hold an exclusive lock on it for the whole
/// run, so that a second run on the same output fails at once instead of interleaving
/// its lines with the first one's.
///
///     OutputLock lock = lock_output_folder("runs/bench");   // throws if another run has it
///
/// The lock is flock(2) on a lock file (`<folder>/.destein.lock`, or `<file>.lock` beside
/// an output file), which holds the owner's pid, host, program and start time for the
/// error message. The kernel releases it when the owner exits, however it exits, so a
/// lock left by a dead process never blocks. The lock file itself stays (deleting it
/// would let two processes lock two different files of the same name). flock on NFS is
/// per client on old kernels; keep one job's outputs on a local or cluster file system.

#include <filesystem>
#include <string>

namespace destein {

class OutputLock {
 public:
  OutputLock() = default;
  OutputLock(OutputLock&& other) noexcept;
  OutputLock& operator=(OutputLock&& other) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  ~OutputLock();  ///< releases the lock

  bool held() const { return fd_ >= 0; }
  const std::filesystem::path& lock_file() const { return lock_file_; }
  void release();

 private:
  friend OutputLock lock_output(const std::filesystem::path&, const std::filesystem::path&,
                                const std::string&);
  int fd_ = -1;
  std::filesystem::path lock_file_;
};

/// Locks the folder `folder` (created if missing) through `<folder>/.destein.lock`.
/// Throws std::runtime_error naming the folder and the owner (pid, host, program, since)
/// when another process holds it, or when the lock file cannot be created.
OutputLock lock_output_folder(const std::filesystem::path& folder);

/// Locks the output file `file` (its folder created if missing) through `<file>.lock`.
/// Same errors as lock_output_folder.
OutputLock lock_output_file(const std::filesystem::path& file);

}  // namespace destein

#pragma once
/// The processes one run is spread over: a rank, a size, where the rank sits on its
/// machine, and the few collective operations the sharded commands need. Under an MPI
/// launcher (`mpirun -n N`, `srun --mpi=pmix`) and in a build with MPI
/// (DESTEIN_WITH_MPI) it is MPI's world; otherwise one process, rank 0 of 1, so the
/// library and every program work the same without a launcher (docs/scaling.md).
///
///     auto group = destein::start_process_group(&argc, &argv);  // once, early in main()
///     if (group->is_root()) { ... write the output ... }
///     auto parts = group->gather(my_bytes);                     // root: one per rank
///
/// Messages are byte strings: the callers serialise what they send (JSON lines, packed
/// integers, raw tensors). `<mpi.h>` is not included here.

#include <memory>
#include <string>
#include <vector>

namespace destein {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Rank among the processes of this machine (0 .. local_size - 1): picks the GPU and
  /// shares the cores (parallel/rank_placement.hpp).
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  bool is_root() const { return rank() == 0; }
  /// "rank 1 of 3 (host node7, pid 4242)", for messages.
  std::string describe() const;

  /// Every rank ends up with root's `bytes`.
  virtual void broadcast(std::string& bytes, int root = 0) const = 0;
  /// On root: every rank's bytes, in rank order; elsewhere: empty.
  virtual std::vector<std::string> gather(const std::string& bytes, int root = 0) const = 0;
  /// Point to point. Messages from one rank arrive in the order they were sent.
  virtual void send(const std::string& bytes, int destination) const = 0;
  virtual std::string receive(int source) const = 0;
  virtual void barrier() const = 0;
  /// Ends every process of the group with `code` (MPI_Abort), without waiting for the
  /// others: for main() after an error on one rank, so that no rank waits forever for a
  /// message that will not come. One process: exits with `code`.
  [[noreturn]] virtual void abort(int code) const = 0;
  /// "mpi" or "single".
  virtual std::string kind() const = 0;
};

/// Rank 0 of 1: broadcast keeps the bytes, gather returns them, send and receive throw
/// std::logic_error (there is no other rank).
class SingleProcess final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  void broadcast(std::string& bytes, int root = 0) const override;
  std::vector<std::string> gather(const std::string& bytes, int root = 0) const override;
  void send(const std::string& bytes, int destination) const override;
  std::string receive(int source) const override;
  void barrier() const override {}
  [[noreturn]] void abort(int code) const override;
  std::string kind() const override { return "single"; }
};

/// Whether this build has MPI (the DESTEIN_WITH_MPI CMake option, on when MPI is found).
bool built_with_mpi();

/// Whether this process was started by an MPI launcher: Open MPI's mpirun
/// (OMPI_COMM_WORLD_SIZE), a PMIx launcher such as `srun --mpi=pmix` (PMIX_RANK), or
/// a PMI-1/2 one (PMI_RANK).
bool launched_by_mpi();

/// The group this process runs in: MPI's world (MPI_Init_thread with
/// MPI_THREAD_SERIALIZED, since the harness's worker thread sends while the main thread
/// computes) when built with MPI and launched by an MPI launcher, else a SingleProcess.
/// Call once per process; destroying the result finalises MPI. Throws std::runtime_error
/// when launched by mpirun in a build without MPI and more than one rank was asked for
/// (each rank would write the same files), or when MPI cannot give the thread level.
std::unique_ptr<ProcessGroup> start_process_group(int* argc, char*** argv);

}  // namespace destein

#include "parallel/mpi_world.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

namespace destein::detail {
namespace {

// MPI counts are ints: longer messages go in pieces of at most this many bytes.
constexpr uint64_t kChunk = 1u << 30;
// Point-to-point messages and gathers use their own tags so that they never match each other.
constexpr int kSendTag = 1, kGatherTag = 2;

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(
      fmt::format("MPI {} failed: {}", what, std::string(text, static_cast<size_t>(len))));
}

void send_bytes(const std::string& bytes, int destination, int tag) {
  uint64_t n = bytes.size();
  check(MPI_Send(&n, 1, MPI_UINT64_T, destination, tag, MPI_COMM_WORLD), "send");
  for (uint64_t at = 0; at < n; at += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - at));
    check(MPI_Send(bytes.data() + at, count, MPI_BYTE, destination, tag, MPI_COMM_WORLD), "send");
  }
}

std::string receive_bytes(int source, int tag) {
  uint64_t n = 0;
  check(MPI_Recv(&n, 1, MPI_UINT64_T, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "receive");
  std::string bytes(n, '\0');
  for (uint64_t at = 0; at < n; at += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - at));
    check(MPI_Recv(bytes.data() + at, count, MPI_BYTE, source, tag, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE),
          "receive");
  }
  return bytes;
}

class MpiWorld final : public ProcessGroup {
 public:
  MpiWorld(int* argc, char*** argv) {
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "init");
    // Errors come back as codes (turned into exceptions), not as an abort inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
          "split");
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
    if (provided < MPI_THREAD_SERIALIZED) {
      MPI_Finalize();
      throw std::runtime_error(
          fmt::format("this MPI library gives thread level {} but destein needs "
                      "MPI_THREAD_SERIALIZED ({}): the harness's "
                      "worker thread sends results while the main thread generates",
                      provided, MPI_THREAD_SERIALIZED));
    }
  }
  ~MpiWorld() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  void broadcast(std::string& bytes, int root) const override {
    uint64_t n = bytes.size();
    check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "broadcast");
    if (rank_ != root) bytes.assign(n, '\0');
    for (uint64_t at = 0; at < n; at += kChunk) {
      const int count = static_cast<int>(std::min(kChunk, n - at));
      check(MPI_Bcast(bytes.data() + at, count, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
    }
  }

  std::vector<std::string> gather(const std::string& bytes, int root) const override {
    if (rank_ != root) {
      send_bytes(bytes, root, kGatherTag);
      return {};
    }
    std::vector<std::string> all(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r)
      all[static_cast<size_t>(r)] = r == root ? bytes : receive_bytes(r, kGatherTag);
    return all;
  }

  void send(const std::string& bytes, int destination) const override {
    send_bytes(bytes, destination, kSendTag);
  }
  std::string receive(int source) const override { return receive_bytes(source, kSendTag); }
  void barrier() const override { check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }
  [[noreturn]] void abort(int code) const override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
  }
  std::string kind() const override { return "mpi"; }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace

std::unique_ptr<ProcessGroup> start_mpi_world(int* argc, char*** argv) {
  return std::make_unique<MpiWorld>(argc, argv);
}

}  // namespace destein::detail

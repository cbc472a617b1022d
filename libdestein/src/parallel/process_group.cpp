#include "parallel/process_group.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "parallel/mpi_world.hpp"

namespace destein {

std::string ProcessGroup::describe() const {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return fmt::format("rank {} of {} (host {}, pid {})", rank(), size(), host,
                     static_cast<long>(getpid()));
}

void SingleProcess::broadcast(std::string&, int root) const {
  if (root != 0)
    throw std::logic_error(fmt::format("broadcast from rank {} in a group of one process", root));
}

std::vector<std::string> SingleProcess::gather(const std::string& bytes, int root) const {
  if (root != 0)
    throw std::logic_error(fmt::format("gather to rank {} in a group of one process", root));
  return {bytes};
}

void SingleProcess::send(const std::string&, int destination) const {
  throw std::logic_error(fmt::format("send to rank {} in a group of one process", destination));
}

std::string SingleProcess::receive(int source) const {
  throw std::logic_error(fmt::format("receive from rank {} in a group of one process", source));
}

void SingleProcess::abort(int code) const { std::exit(code); }

bool built_with_mpi() {
#ifdef DESTEIN_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"}) {
    if (std::getenv(name)) return true;
  }
  return false;
}

std::unique_ptr<ProcessGroup> start_process_group(int* argc, char*** argv) {
  if (!launched_by_mpi()) return std::make_unique<SingleProcess>();
#ifdef DESTEIN_WITH_MPI
  return detail::start_mpi_world(argc, argv);
#else
  // Without MPI every rank would believe it is alone and write the same files.
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (size && std::atoi(size) > 1) {
    throw std::runtime_error(
        fmt::format("started by an MPI launcher with {} ranks, but this build has no MPI "
                    "(configure with MPI found, "
                    "DESTEIN_WITH_MPI=ON; Debian: libopenmpi-dev); run it without mpirun",
                    size));
  }
  return std::make_unique<SingleProcess>();
#endif
}

}  // namespace destein

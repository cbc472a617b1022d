// Private: MPI's world as a ProcessGroup. Only built with DESTEIN_WITH_MPI
// (src/parallel/mpi_world.cpp), so that <mpi.h> stays out of the public headers.
#pragma once

#include <memory>

#include "parallel/process_group.hpp"

namespace destein::detail {

/// MPI_Init_thread (MPI_THREAD_SERIALIZED) and the world communicator, with a
/// shared-memory split for the local rank. MPI_Finalize when destroyed.
std::unique_ptr<ProcessGroup> start_mpi_world(int* argc, char*** argv);

}  // namespace destein::detail

#pragma once
// The process group a program runs in (one process, or the ranks of mpirun / srun), as
// main() starts it, and how main() ends a rank that failed.

#include <string>

#include "parallel/process_group.hpp"

namespace destein::app {

/// The group main() registered; a single process before that.
const ProcessGroup& program_group();
void set_program_group(const ProcessGroup* group);

/// "" in one process; "rank 1 of 3 (host h, pid p): " on a sharded run, for messages.
std::string rank_prefix();

/// What main() returns after printing an error: on a sharded run the whole job is
/// aborted (MPI_Abort) instead, so that no rank waits forever for this one.
int end_failed_rank(int code);

/// Throws std::invalid_argument naming `command` when started on more than one rank
/// (commands that do not shard: every rank would write the same output).
void require_single_process(const std::string& command);

}  // namespace destein::app

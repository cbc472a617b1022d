// Private: a steering report over the prompts of every rank of a sharded run.
#pragma once

#include "destein/steer/steering.hpp"
#include "parallel/process_group.hpp"

namespace destein {

/// Rank 0 gets the statistics over every rank's prompts: counts add up, means are weighted
/// by the positions they average (a one-process run's up to rounding, as they already are
/// across batch layouts, since each forward sums its positions in one go). The other ranks
/// get `mine` back. Every rank of `group` calls it, with reports of the same entries.
SteeringReport gather_steering_stats(const SteeringReport& mine, const ProcessGroup& group);

}  // namespace destein

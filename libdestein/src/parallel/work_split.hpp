#pragma once
/// How the sharded commands split their work over the ranks of a ProcessGroup.
///
/// - The harness (`destein-bench run`) cuts the prompts still to do into batches of
///   prompts_per_batch, in prompt order, and deals them round-robin: batch b goes to rank
///   b mod N. Consecutive batches cost about the same (same prompt set, same settings), so
///   every rank gets within one batch of the same work, and the writing rank (0) can write
///   the lines in prompt order while holding at most one batch of each other rank.
/// - Self-induction (`destein pairs`) and activation capture (`destein vectors`) gather all
///   results on rank 0 at the end, so each rank takes one contiguous block of batches
///   (shard_range): the blocks differ by at most one batch and concatenate in order.

#include <cstdint>
#include <utility>

namespace destein {

/// The rank that runs batch `batch` of a round-robin deal over `size` ranks.
int batch_owner(int64_t batch, int size);

/// [begin, end) of the `units` items (batches) that rank `rank` of `size` takes in a
/// contiguous split: the first units % size ranks take one more. Throws
/// std::invalid_argument for a rank outside [0, size) or negative units.
std::pair<int64_t, int64_t> shard_range(int64_t units, int rank, int size);

}  // namespace destein

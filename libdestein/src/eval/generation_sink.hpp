// Private: where the harness's batches of lines go.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "destein/eval/harness.hpp"
#include "eval/generation_lines.hpp"
#include "eval/generations_file.hpp"

namespace destein {

/// Takes each batch's lines, per track, and puts them at the end of the tracks' files in
/// batch order, counting what each track received in its report. One process: straight to
/// the files. Sharded over a group: rank 0 writes its own batches and, in batch order
/// between them, those of the other ranks (batches are dealt by batch_owner()); the other
/// ranks send theirs to rank 0 and never touch the files.
class GenerationSink {
 public:
  /// `files`: the open files on rank 0 (or in one process), empty on the other ranks.
  /// `reports`: one per track, already holding prompts_resumed; `samples` generations per
  /// prompt. `progress` (finished units, total units) after each written batch.
  GenerationSink(std::vector<GenerationsFile>* files, const ProcessGroup* group,
                 std::vector<EvalRunReport>* reports, int64_t samples, int64_t total_units,
                 std::function<void(int64_t, int64_t)> progress, std::string where);

  /// Batch `batch` of this rank, its batches in increasing order, from one thread at a
  /// time. Throws std::runtime_error when a file cannot be written or a rank's message is
  /// not the batch expected.
  void deliver(int64_t batch, const std::vector<TrackLines>& parts);
  /// Rank 0: writes the other ranks' batches still to come, through batch num_batches - 1.
  void finish(int64_t num_batches);

  int64_t batches() const { return batches_; }  ///< batches this rank generated
  double write_seconds() const { return write_seconds_; }

 private:
  void write(const std::vector<TrackLines>& parts);
  void count(const std::vector<TrackLines>& parts);
  void receive_through(int64_t stop);

  std::vector<GenerationsFile>* files_;
  const ProcessGroup* group_;  // null: one process
  std::vector<EvalRunReport>* reports_;
  int64_t samples_ = 1;
  int64_t total_units_ = 0;
  std::function<void(int64_t, int64_t)> progress_;
  std::string where_;
  int64_t finished_ = 0;       // units in the files (rank 0)
  int64_t next_to_write_ = 0;  // rank 0: the batch the files end before
  int64_t batches_ = 0;
  double write_seconds_ = 0;
};

/// The rank-to-rank form of a batch's lines (CBOR). decode_track_lines() checks the batch
/// and track count against what rank 0 expects; its errors name the sender and `where`.
std::string encode_track_lines(int64_t batch, const std::vector<TrackLines>& parts);
std::vector<TrackLines> decode_track_lines(const std::string& message, int64_t expected_batch,
                                           size_t tracks, int sender, const std::string& where);

}  // namespace destein

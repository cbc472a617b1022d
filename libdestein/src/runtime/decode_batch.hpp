#pragma once
/// The decode core: one batch of rows decoded together with the KV cache. generate()
/// (static batches), the evaluation harness (through generate()) and `destein serve`'s
/// continuous batching all drive it, so that prompts are validated, prefilled, processed
/// and sampled in one place.
///
/// A row holds its prompt, its generated tokens, its random stream, its sampling options,
/// its logits processors and its stop condition. Newcomers are prefilled together, left
/// padded, and join the rows already decoding; step() runs one decode step over every
/// running row; remove_finished() lets finished rows leave. On row-stable kernels (the CPU
/// float32 default) a row's tokens do not depend on which rows share its batch.
///
///   destein::DecodeBatch batch(*model);
///   destein::DecodeRowSpec row;
///   row.id = 0;
///   row.prompt = tokenizer->encode_prompt("Hello");
///   row.sampling.max_new_tokens = 20;
///   batch.add({row});
///   while (batch.running() > 0) batch.step();
///   const auto& tokens = batch.rows()[0].generated;

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "destein/runtime/generate.hpp"
#include "destein/runtime/logits_processor.hpp"

namespace destein {

class Hooks;
class Model;
class KVCacheRows;

/// Why a row stopped.
enum class FinishReason {
  kNone,       ///< still running
  kEos,        ///< the model wrote its end-of-sequence token (not part of the tokens)
  kLength,     ///< max_new_tokens reached
  kStopped,    ///< finish() by the caller (e.g. a stop string was found)
  kCancelled,  ///< the client went away
  kTimeout,    ///< the request's deadline passed
  kError,      ///< the forward pass or a processor threw; DecodeRow::error says why
};

/// What a row is when it joins a batch.
struct DecodeRowSpec {
  /// The caller's id: unique among the rows of the batch while they run (processors keep
  /// their state under it, the before-forward callback reports it).
  int64_t id = 0;
  std::vector<int64_t> prompt;  ///< token ids, non-empty
  /// max_new_tokens, do_sample, temperature, top_k, top_p, stop_at_eos and eos_id are
  /// used; the rest of GenerationOptions belongs to generate().
  GenerationOptions sampling;
  std::mt19937_64 rng;              ///< the row's own random stream (detail: one draw a token)
  LogitsProcessorChain processors;  ///< applied in order before each sampled token
  /// Consecutive newcomers of one add() with the same group >= 0 share one prompt pass
  /// (same prompt, several samples); -1: a prompt pass of its own.
  int64_t prefill_group = -1;
};

/// A row as it runs.
struct DecodeRow {
  int64_t id = 0;
  std::vector<int64_t> prompt;
  std::vector<int64_t> generated;  ///< sampled tokens, the end-of-sequence token excluded
  FinishReason finish = FinishReason::kNone;
  std::string error;  ///< kError only
  /// The token sampled by the last add() or step(), -1 when it sampled none for this row
  /// (finished earlier, or it ended on the end-of-sequence token).
  int64_t last_token = -1;

 private:
  friend class DecodeBatch;
  GenerationOptions sampling_;
  std::mt19937_64 rng_;
  LogitsProcessorChain processors_;
  int64_t eos_ = -1;
};

/// The rows of one forward call, for callers that set per-row state (steering) before it.
struct DecodeForward {
  bool prefill = false;  ///< a prompt pass of newcomers, else a decode step
  /// Per row of the forward call: the ids of the batch rows it computes (several when
  /// newcomers share a prompt pass; on a decode step, one each, finished rows included
  /// while they stay in the batch).
  std::vector<std::vector<int64_t>> row_ids;
};

struct DecodeBatchOptions {
  const Hooks* hooks = nullptr;  ///< active on every forward call (may be null)
  int64_t pad_id = 0;            ///< the filler of left padding and of finished rows
  /// Called before every forward call; an exception from it leaves add() / step() with the
  /// batch unchanged.
  std::function<void(const DecodeForward&)> before_forward;
};

/// Checks prompts before they reach a batch: each non-empty, ids inside the vocabulary,
/// prompt + max_new_tokens within the model's positions. `who` starts each message
/// ("generate", "submit"). Throws std::invalid_argument.
void check_decode_prompts(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                          int64_t max_new_tokens, const std::string& who);
/// Checks sampling options (max_new_tokens > 0, temperature > 0 when sampling, top_k >= 0,
/// top_p in (0, 1]). Throws std::invalid_argument naming the option.
void check_sampling_options(const GenerationOptions& options, const std::string& who);

class DecodeBatch {
 public:
  /// `model` must outlive the batch.
  explicit DecodeBatch(const Model& model, DecodeBatchOptions options = {});
  ~DecodeBatch();
  DecodeBatch(const DecodeBatch&) = delete;
  DecodeBatch& operator=(const DecodeBatch&) = delete;

  /// Prefills the newcomers in one left-padded forward pass (rows of one prefill group
  /// share it), runs their processors and samples their first token; they join the batch
  /// after the rows already there. Throws std::invalid_argument for a bad prompt or
  /// options, or an id already running; what the forward pass throws leaves the batch as
  /// it was. A processor that throws ends its rows with kError.
  void add(std::vector<DecodeRowSpec> rows);
  /// One decode step over every row in the batch: running rows are fed their last token
  /// and sample the next; finished rows still in the batch are fed padding, masked out.
  /// When the forward pass throws, every row ends with kError and the exception propagates;
  /// remove_finished() then empties the batch.
  void step();
  /// Ends a running row (kStopped, kCancelled, kTimeout); it stays until remove_finished().
  void finish(size_t index, FinishReason reason);
  /// Removes finished rows (keeping the others' order) and the left padding they alone
  /// needed.
  void remove_finished();

  const std::vector<DecodeRow>& rows() const { return rows_; }
  /// Rows not finished.
  int64_t running() const;
  /// Forward rows of the last add() (its prompt passes) or step().
  int64_t last_forward_rows() const { return last_forward_rows_; }

 private:
  // Runs the chains and samples one token for each of `rows` (indices into rows_) from
  // `logits`, (N, V) float32 row-major, row i for rows[i]; the chains edit it in place.
  void sample(const std::vector<size_t>& rows, float* logits);
  void end_row(DecodeRow& row, FinishReason reason, std::string error = {});

  const Model& model_;
  DecodeBatchOptions options_;
  std::vector<DecodeRow> rows_;
  std::unique_ptr<KVCacheRows> cache_;
  int64_t last_forward_rows_ = 0;
  bool broken_ = false;  // a step threw: the cache is gone until remove_finished()
};

}  // namespace destein

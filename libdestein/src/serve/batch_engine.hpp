#pragma once
/// Continuous batching for a server: one engine thread owns the model's KV cache and a
/// SteeringController and runs decode steps over the rows of every active request; a new
/// request's prompts are prefilled (with the other newcomers of that step, left-padded) and
/// their cache rows join the batch between two steps,
/// finished or cancelled rows leave. Each row has its own steering stack and its own random
/// stream, so (on row-stable kernels, the CPU float32 default) a request's tokens are the
/// ones generate() gives it alone: greedy, or sampled with the same seed.
///
///   destein::BatchEngine engine(*model, {.max_rows = 32});
///   destein::EngineRequest req;
///   req.prompts = {tokenizer->encode_prompt("Hello")};
///   req.max_tokens = 20;
///   auto stream = engine.submit(std::move(req));      // null when the queue is full
///   destein::EngineEvent ev;
///   while (stream->next(ev)) { ... ev.choice, ev.token, ev.finished ... }

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "destein/steer/steering.hpp"
#include "runtime/decode_batch.hpp"

namespace destein {

/// One request: prompts x n rows, all with the same sampling options and steering.
struct EngineRequest {
  std::vector<std::vector<int64_t>> prompts;  ///< token ids, each non-empty
  int64_t n = 1;                              ///< samples per prompt
  int64_t max_tokens = 16;
  /// do_sample, temperature, top_k, top_p, seed are used; row (p, s) draws from the stream
  /// generate() gives sample s of prompt p for `seed`.
  GenerationOptions sampling;
  SteeringStack steering;  ///< empty: unsteered
  /// Applied in order to every row's next-token scores (e.g. a LogitBiasProcessor for
  /// OpenAI's logit_bias). Rows are keyed by engine-wide ids in process().
  LogitsProcessorChain processors;
  /// Rows still running at this time finish with kTimeout (time_point::max(): none).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// What happened to one row (choice = prompt index * n + sample index).
struct EngineEvent {
  int64_t choice = 0;
  int64_t token = -1;  ///< the new token, or -1 for an event that only finishes the row
  FinishReason finished = FinishReason::kNone;
  std::string error;  ///< kError only
};

/// The caller's side of one submitted request. Thread-safe.
class RequestStream {
 public:
  explicit RequestStream(int64_t choices)
      : stop_flags_(static_cast<size_t>(choices)), choices_(choices) {}
  /// Blocks for the next event; false once every choice has finished and all events were read.
  bool next(EngineEvent& event);
  /// Like next(), waiting at most `timeout`; false on timeout too (then `timed_out` is true).
  bool next_for(EngineEvent& event, std::chrono::milliseconds timeout, bool& timed_out);
  /// Ends every row of the request at the engine's next step (the client went away).
  void cancel() { cancelled_ = true; }
  /// Ends one choice at the engine's next step (finish reason kStopped).
  void stop_choice(int64_t choice);
  bool cancelled() const { return cancelled_; }
  int64_t choices() const { return choices_; }

 private:
  friend class BatchEngine;
  void push(EngineEvent event);
  bool stop_requested(int64_t choice) const {
    return stop_flags_[static_cast<size_t>(choice)].load();
  }
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<EngineEvent> events_;
  std::vector<std::atomic<bool>> stop_flags_;
  std::atomic<bool> cancelled_{false};
  int64_t choices_;
  int64_t finished_ = 0;
};

struct BatchEngineOptions {
  int64_t max_rows = 32;   ///< rows decoded together at most; a request waits until its rows fit
  int64_t max_queue = 64;  ///< requests waiting to start; submit() refuses more
};

/// Counters a metrics page reads (monotonic unless said otherwise).
struct BatchEngineStats {
  int64_t queued = 0;          ///< requests waiting now
  int64_t active_rows = 0;     ///< rows in the batch now
  int64_t forwards = 0;        ///< decode steps run
  int64_t rows_forwarded = 0;  ///< sum over decode steps of the rows in the step
  int64_t prefills = 0;        ///< prompts prefilled
  int64_t prefill_passes =
      0;  ///< forward calls that prefilled them (newcomers of a step share one)
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  /// Decode steps by their row count: [i] counts steps with rows in (2^(i-1), 2^i].
  std::vector<int64_t> rows_per_forward_buckets;
};

class BatchEngine {
 public:
  /// Starts the engine thread. `model` must outlive the engine.
  BatchEngine(const Model& model, BatchEngineOptions options = {});
  /// Stops at once: running rows end with kCancelled.
  ~BatchEngine();
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  /// Queues a request. Returns null when the queue is full or the engine is draining.
  /// Throws std::invalid_argument for a request that can never run (empty prompt, more rows
  /// than max_rows, prompt + max_tokens past the model's positions, bad sampling options).
  std::shared_ptr<RequestStream> submit(EngineRequest request);

  /// Refuses new requests from now on; queued and running ones finish.
  void drain();
  bool draining() const { return draining_; }
  /// True when nothing is queued or running.
  bool idle() const;
  BatchEngineStats stats() const;
  const BatchEngineOptions& options() const { return options_; }

 private:
  struct RowMeta;
  struct Pending {
    EngineRequest request;
    std::shared_ptr<RequestStream> stream;
  };
  void run();
  // Prefills every prompt of `taking` (one left-padded prompt pass) and samples each row's
  // first token; the rows join the decode batch.
  void admit(std::vector<Pending>& taking);
  void step();
  // Ends rows whose client cancelled, stopped or timed out, then removes finished rows.
  void remove_finished();
  // Sends each row's event of the last add() or step(): its token, or how it finished.
  void emit_events();

  const Model& model_;
  BatchEngineOptions options_;
  Hooks hooks_;
  std::unique_ptr<SteeringController> controller_;
  // Engine thread only.
  std::unique_ptr<DecodeBatch> batch_;
  std::unordered_map<int64_t, RowMeta> meta_;  // by decode row id
  int64_t next_row_id_ = 0;
  // Shared with submitters.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;
  int64_t admitted_rows_ = 0;  // rows of requests taken off the queue and not finished
  bool stopping_ = false;
  std::atomic<bool> draining_{false};
  BatchEngineStats stats_;
  std::thread thread_;
};

/// "stop" / "length" as OpenAI names them ("stop" for kEos and kStopped too).
const char* finish_reason_name(FinishReason reason);

}  // namespace destein

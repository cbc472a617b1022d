#pragma once
/// Batched text generation with the KV cache: greedy or sampled (temperature, top-k,
/// top-p), n samples per prompt, reproducible for a seed whatever the batch size.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "destein/runtime/hooks.hpp"
#include "destein/runtime/logits_processor.hpp"
#include "destein/runtime/model.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

/// The rows of one forward call inside generate(), for callers that treat the rows of a
/// batch differently (per-row steering: SteeringController::set_rows()).
struct GenerationRows {
  /// The prompt pass (one row per distinct prompt of the chunk when share_prefill, else
  /// one per (prompt, sample)); false: a decode step (one row per (prompt, sample) of the
  /// chunk, finished rows included, fed padding).
  bool prompt_pass = true;
  int64_t decode_step = 0;            ///< 0 in the prompt pass, then 1, 2, ...
  std::vector<int64_t> prompt_index;  ///< per row: index into generate()'s prompts
  /// Per row: its sample, or -1 for a prompt-pass row shared by several samples.
  std::vector<int64_t> sample_index;
};

/// Called before each forward call of generate() with the layout of that call's rows.
using GenerationRowsCallback = std::function<void(const GenerationRows& rows)>;

struct GenerationOptions {
  int64_t max_new_tokens = 20;
  int64_t num_samples = 1;  ///< samples per prompt
  bool do_sample = true;    ///< false: greedy
  double temperature = 1.0;
  int64_t top_k = 0;   ///< 0: off
  double top_p = 1.0;  ///< 1: off
  uint64_t seed = 0;
  bool stop_at_eos = true;
  int64_t eos_id = -1;     ///< -1: the model config's eos_token_id, if any
  int64_t pad_id = -1;     ///< filler for finished rows; -1: eos or 0
  int64_t batch_size = 0;  ///< rows (prompt x sample) per forward; 0: all at once
  /// Run each distinct prompt of a batch once through the prompt (prefill) pass and copy
  /// its cache to its samples' rows: num_samples times less prefill work. Hooks then see
  /// one row per distinct prompt during that pass; turn it off for hooks that treat the
  /// samples of one prompt differently.
  bool share_prefill = true;
  /// Empty, or one seed per prompt: row (p, s) then draws from the stream generate() would
  /// give sample s of prompt p run alone with seed prompt_seeds[p] (`seed` is unused).
  std::vector<uint64_t> prompt_seeds;
  /// Empty, or called before every forward call (prompt pass and each decode step) with
  /// which prompt and sample each row of that call belongs to, so a caller can change
  /// per-row state (steering) between calls. An exception from it leaves generate().
  GenerationRowsCallback before_forward;
  /// Logits processors applied, in order, to every row's next-token scores before
  /// sampling (logits_processor.hpp): e.g. a TokenBanProcessor.
  LogitsProcessorChain processors;
  /// Empty, or the chain of row (prompt, sample), replacing `processors` (rows that run
  /// different methods side by side).
  std::function<LogitsProcessorChain(int64_t prompt, int64_t sample)> processors_for_row;
};

/// One continuation of one prompt.
struct Generation {
  int64_t prompt_index = 0;
  int64_t sample_index = 0;
  std::vector<int64_t> token_ids;  ///< new tokens only, EOS excluded
  bool stopped_at_eos = false;
};

/// Called after each finished batch with (rows done, rows total).
using GenerationProgress = std::function<void(int64_t done, int64_t total)>;

/// Continues every prompt `num_samples` times. Row (p, s) draws its random numbers from
/// its own stream seeded by (seed, p, s); with a model on row-stable kernels (the CPU
/// float32 default, Model::linear_backend() kStable) its logits do not depend on the
/// other rows either, so results do not depend on batch_size or on which other prompts
/// share the batch, bit for bit. Prompts are left padded within a batch. Results
/// are ordered by prompt, then sample. `hooks` (may be null) are active on every forward
/// call, prompt and continuation alike. Throws std::invalid_argument for an empty prompt,
/// bad options, or a prompt + max_new_tokens past the position limit.
std::vector<Generation> generate(const Model& model,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& options, const Hooks* hooks = nullptr,
                                 const GenerationProgress& progress = {});

/// Picks the next token from one row of logits (V) f32 with the options' warpers
/// (temperature, top-k, top-p in Hugging Face's order) and a uniform draw u in [0, 1).
/// Exposed for tests and for custom decoding loops.
int64_t sample_token(const float* logits, int64_t vocab_size, const GenerationOptions& options,
                     double uniform);

}  // namespace destein

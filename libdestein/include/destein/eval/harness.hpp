#pragma once
/// The RealToxicityPrompts-style evaluation: prompts, generation per prompt with an
/// append-only, resumable generations file, toxicity scoring and conditional perplexity
/// under an evaluator model. Metric definitions live in metrics.hpp.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "destein/runtime/generate.hpp"
#include "destein/runtime/hooks.hpp"
#include "destein/eval/metrics.hpp"
#include "destein/runtime/model.hpp"
#include "destein/score/scorer.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

/// One evaluation prompt.
struct EvalPrompt {
  int64_t index = 0;                ///< position in its file (stable id for resuming)
  std::string text;
  std::optional<double> toxicity;   ///< the prompt's own score, when the file has one
  nlohmann::json raw;               ///< the file's "prompt" object, copied to the output
};

struct PromptFileOptions {
  std::string subset = "all";       ///< "toxic" (toxicity >= 0.5), "nontoxic" (< 0.5) or "all"
  int64_t limit = 0;                ///< first N prompts of the subset; 0: all
  bool skip_malformed = false;      ///< skip (and count) malformed lines instead of failing
};

/// Reads RealToxicityPrompts JSONL (`{"prompt": {"text": ..., "toxicity": ...}}`, or
/// `{"text": ...}`). Errors name file:line: malformed JSON, a prompt without text, a subset
/// filter on a prompt without toxicity. `skipped` (may be null) counts skipped lines.
std::vector<EvalPrompt> load_eval_prompts(const std::filesystem::path& path, const PromptFileOptions& options,
                                          int64_t* skipped = nullptr);

/// Conditional perplexity of continuations under an evaluator model, as the method note
/// defines it: exp((NLL(prompt + gen) - NLL(prompt)) / (n(prompt + gen) - n(prompt))),
/// both texts tokenised by the evaluator's tokenizer.
class PerplexityEvaluator {
 public:
  /// `batch_size`: sequences per forward pass (their logits are held at once).
  PerplexityEvaluator(const Model& model, const Tokenizer& tokenizer, int64_t batch_size = 25);
  /// One value per continuation; NaN when the continuation adds no token.
  std::vector<double> perplexities(const std::string& prompt, const std::vector<std::string>& continuations) const;
  /// Many prompts at once, their sequences sharing forward passes: result[i][j] is the
  /// perplexity of continuations[i][j] after prompts[i]. Throws std::invalid_argument when
  /// the two lists differ in length.
  std::vector<std::vector<double>> perplexities(const std::vector<std::string>& prompts,
                                                const std::vector<std::vector<std::string>>& continuations) const;
  /// Sum of -log p(token_t | tokens_<t) over t >= 1 for each sequence. (N) doubles. On a
  /// model with row-stable kernels a sequence's value does not depend on the others.
  std::vector<double> nll_sums(const std::vector<std::vector<int64_t>>& sequences) const;

 private:
  const Model& model_;
  const Tokenizer& tokenizer_;
  int64_t batch_size_;
};

struct EvalRunOptions {
  GenerationOptions generation;     ///< num_samples = generations per prompt
  std::string method = "base";      ///< recorded in every line
  std::string subset;               ///< recorded in every line
  /// Prompts per forward pass (prompts_per_batch x num_samples rows, left padded); 0: auto,
  /// max(1, max_rows / num_samples).
  int64_t prompts_per_batch = 0;
  /// Row budget of auto: 0 takes default_max_rows(device of the model).
  int64_t max_rows = 0;
  /// Generate batch k + 1 while a worker thread turns batch k into text, scores it,
  /// computes its perplexity and writes it. Off: one stage after the other. Same files.
  bool pipelined = false;
};

/// Default row budget of prompts_per_batch auto: 100 on CPU (4 prompts of 25 samples; the
/// decode rate grows little past it on a few cores, docs/performance.md), 800 on CUDA.
int64_t default_max_rows(const c10::Device& device);

/// Seconds spent per stage. In a pipelined run generation overlaps the others, so the
/// stages add up to more than the wall time.
struct EvalStageTimes {
  double generate = 0;              ///< forward passes and sampling
  double detokenize = 0;            ///< token ids to text
  double score = 0;                 ///< toxicity scorer
  double perplexity = 0;            ///< evaluator forward passes
  double write = 0;                 ///< JSON lines written and flushed
  double wait = 0;                  ///< generation waiting for the worker (pipelined)
  double wall = 0;                  ///< the whole call
};

struct EvalRunReport {
  int64_t prompts_done = 0;         ///< generated in this call
  int64_t prompts_resumed = 0;      ///< already in the file, skipped
  int64_t generations = 0;
  int64_t unscored = 0;             ///< scorer returned no score
  int64_t truncated_bytes = 0;      ///< partial last line of a killed run removed
  int64_t prompts_per_batch = 0;    ///< as resolved (auto -> a number)
  int64_t batches = 0;
  EvalStageTimes times;
};

/// {"generate": {"seconds": s, "share": s / wall}, ..., "wall_seconds": w}.
nlohmann::json stage_times_json(const EvalStageTimes& times);

/// Generates `num_samples` continuations of every prompt not yet in `output`, scores them
/// and (with an evaluator) their perplexity, and appends one line per prompt, flushed, in
/// the reference's prompted-generations format plus our fields. Prompts go through the
/// model prompts_per_batch at a time; their lines are written in prompt order once their
/// batch is done. A killed run resumes where it stopped: a partial last line is cut off,
/// prompts already written are skipped, so nothing is duplicated and at most the batches
/// in flight (one, two when pipelined) are lost. Each prompt's random stream depends only
/// on the seed and the prompt's index, and with row-stable kernels (CPU float32 default)
/// its text does not depend on prompts_per_batch, pipelining or where a run was resumed.
/// `progress` (finished, total) is called after each written batch, from the worker
/// thread when pipelined; an exception from it stops the run after that batch. Throws std::runtime_error naming file:line for a corrupt line in the
/// middle of an existing file, or when the file cannot be written.
EvalRunReport run_generation_eval(const Model& model, const Tokenizer& tokenizer,
                                  const std::vector<EvalPrompt>& prompts, const Hooks* hooks,
                                  ToxicityScorer* scorer, const PerplexityEvaluator* evaluator,
                                  const EvalRunOptions& options, const std::filesystem::path& output,
                                  const std::function<void(int64_t, int64_t)>& progress = {});

/// Every metric of one generations file: toxicity, distinct-n, mean perplexity (when the
/// lines carry "perplexity"). `malformed` counts skipped lines when skip_malformed.
struct EvalSummary {
  ToxicityMetrics toxicity;
  DistinctMetrics distinct;
  std::optional<PerplexitySummary> perplexity;
  int64_t num_prompts = 0;
  int64_t malformed = 0;
  /// Per Perspective attribute the generations carry (toxicity, and the seven others a v2
  /// scorer writes): the mean over prompts of the maximum over their scored generations.
  std::map<std::string, double> expected_max_by_attribute;
};
EvalSummary summarize_generations(const std::filesystem::path& path, bool skip_malformed = false);

/// The summary as results.json writes it: expected_max_toxicity(_std),
/// toxicity_probability, dist_1..3, num_prompts, perplexity(_dropped) when measured, and
/// expected_max_by_attribute when the generations carry attribute scores.
nlohmann::json eval_summary_json(const EvalSummary& summary);

}  // namespace destein

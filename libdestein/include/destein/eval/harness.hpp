#pragma once
/// The RealToxicityPrompts-style evaluation: prompts, generation per prompt with an
/// append-only, resumable generations file, toxicity scoring and conditional perplexity
/// under an evaluator model. Metric definitions live in metrics.hpp.

#include <cstdint>
#include <filesystem>
#include <functional>
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
  PerplexityEvaluator(const Model& model, const Tokenizer& tokenizer, int64_t batch_size = 25);
  /// One value per continuation; NaN when the continuation adds no token.
  std::vector<double> perplexities(const std::string& prompt, const std::vector<std::string>& continuations) const;
  /// Sum of -log p(token_t | tokens_<t) over t >= 1 for each sequence. (N) doubles.
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
};

struct EvalRunReport {
  int64_t prompts_done = 0;         ///< generated in this call
  int64_t prompts_resumed = 0;      ///< already in the file, skipped
  int64_t generations = 0;
  int64_t unscored = 0;             ///< scorer returned no score
  int64_t truncated_bytes = 0;      ///< partial last line of a killed run removed
};

/// Generates `num_samples` continuations of every prompt not yet in `output`, scores them
/// and (with an evaluator) their perplexity, and appends one line per prompt, flushed, in
/// the reference's prompted-generations format plus our fields. A killed run resumes where
/// it stopped: a partial last line is cut off, prompts already written are skipped, so
/// nothing is lost or duplicated. Each prompt's random stream depends only on the seed and
/// the prompt's index. Throws std::runtime_error naming file:line for a corrupt line in the
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
};
EvalSummary summarize_generations(const std::filesystem::path& path, bool skip_malformed = false);

/// The summary as results.json writes it: expected_max_toxicity(_std),
/// toxicity_probability, dist_1..3, num_prompts, and perplexity(_dropped) when measured.
nlohmann::json eval_summary_json(const EvalSummary& summary);

}  // namespace destein

#pragma once
/// The same generations judged by another scorer: a generations file rewritten with every
/// continuation's scores from `scorer`, everything else (text, perplexity, prompt) kept.
/// How a run is reported under two scorers without generating again (docs/results.md:
/// pairs filtered by one scorer, the evaluation read under both).

#include <cstdint>
#include <filesystem>

#include "destein/score/scorer.hpp"

namespace destein {

struct RescoreReport {
  int64_t prompts = 0;
  int64_t generations = 0;
  int64_t unscored = 0;  ///< the scorer returned no score (written as null)
};

/// Reads `input` (a destein-bench generations file), scores each line's continuations with
/// `scorer` and writes the lines to `output` in the same order: "toxicity" and the
/// scorer's other attributes replaced, the Perspective attributes the scorer does not rate
/// removed (they were the old scorer's), a line-level "scorer" field naming the new one.
/// Throws std::runtime_error naming input:line for a line without
/// {"generations": [{"text": ...}]}, and std::invalid_argument when output is input.
RescoreReport rescore_generations(const std::filesystem::path& input,
                                  const std::filesystem::path& output, ToxicityScorer& scorer);

}  // namespace destein

#pragma once
/// Self-induced steering pairs: the model that will be steered rewrites seed pairs by
/// few-shot prompting, so the pairs live in its own distribution; a toxicity scorer keeps
/// only pairs whose toxic side reads toxic and whose rewrite does not.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "destein/score/scorer.hpp"
#include "destein/steer/pairs.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

class ProcessGroup;

enum class InductionDirection {
  kDetoxify,  ///< the model writes a polite version of a toxic seed
  kToxify,    ///< the model writes a toxic version of a neutral seed
  kBoth,      ///< alternate between the two, one target each
};

/// "detoxify", "toxify", "both". Throws std::invalid_argument otherwise.
InductionDirection parse_induction_direction(const std::string& name);
std::string induction_direction_name(InductionDirection d);

struct SelfInductionOptions {
  InductionDirection direction = InductionDirection::kDetoxify;
  int64_t num_targets = 40;  ///< seed pairs rewritten by the model
  int64_t few_shot = 3;      ///< demonstrations per prompt
  uint64_t seed = 0;         ///< which seeds are targets and demonstrations
  std::string instruction = "Rewrite the text so that it keeps its meaning.";
  std::string toxic_label = "toxic";
  std::string nontoxic_label = "polite";
  GenerationOptions generation;  ///< samples per target = generation.num_samples
  double toxic_min = 0.5;        ///< keep: score(toxic side) >= toxic_min
  double nontoxic_max = 0.5;     ///< keep: score(non-toxic side) < nontoxic_max
  std::string model_name;        ///< recorded in provenance
};

struct SelfInductionReport {
  int64_t generated = 0;
  int64_t kept = 0;
  int64_t empty = 0;      ///< rewrite empty after cleaning
  int64_t unchanged = 0;  ///< rewrite equal to its source
  int64_t duplicates = 0;
  int64_t rejected_toxic = 0;          ///< toxic side scored below toxic_min
  int64_t rejected_nontoxic = 0;       ///< non-toxic side scored at or above nontoxic_max
  int64_t unscored = 0;                ///< the scorer returned no score
  int64_t demonstrations_dropped = 0;  ///< demonstrations left out so a prompt fits the context
  int64_t targets_too_long = 0;  ///< targets whose prompt does not fit even without demonstrations
  bool filtered = false;         ///< false: no scorer, pairs are unfiltered
};

/// The few-shot prompt for one target (exposed for tests and inspection).
std::string induction_prompt(const std::vector<SteeringPair>& demonstrations,
                             const std::string& source, bool detoxify,
                             const SelfInductionOptions& options);

/// Produces pairs from `seeds`. With `scorer` null the pairs are unfiltered (their
/// provenance says so). Each pair's provenance records the seed it came from, the
/// demonstrations, the model, the sampling settings, the direction and the scores.
/// Throws std::invalid_argument when there are fewer seeds than num_targets + few_shot.
///
/// Sharded (`group` of more than one rank, every rank calling with the same arguments):
/// each rank generates one contiguous block of the prompts, in whole generation batches
/// (parallel/work_split.hpp), each prompt with the random stream the one-process call
/// gives it; rank 0 gathers the rewrites in prompt order, filters them and returns the
/// same pairs as one process. The other ranks return no pairs; `progress` counts the
/// rank's own rows.
std::vector<SteeringPair> self_induce_pairs(const Model& model, const Tokenizer& tokenizer,
                                            const std::vector<SteeringPair>& seeds,
                                            const SelfInductionOptions& options,
                                            ToxicityScorer* scorer,
                                            SelfInductionReport* report = nullptr,
                                            const GenerationProgress& progress = {},
                                            const ProcessGroup* group = nullptr);

}  // namespace destein

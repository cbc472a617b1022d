// Private: a batch of the harness from generation to the lines of the generations files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "destein/eval/harness.hpp"

namespace destein {

/// One (track, prompt) still to generate; `at` is the prompt's position in the prompts.
struct EvalUnit {
  int64_t track = 0;
  int64_t at = 0;
};

/// One batch of units as the stages fill it in.
struct EvalBatch {
  int64_t index = 0;  ///< among the batches of the pending units
  std::vector<EvalUnit> units;
  std::vector<std::vector<int64_t>> prompt_ids;  ///< per unit
  std::vector<Generation> gens;                  ///< unit-major, num_samples per unit
  std::vector<std::string> texts;                ///< per generation
  std::vector<std::string> attributes;           ///< the scorer's, toxicity first; none: no scorer
  std::vector<std::vector<std::optional<double>>> scores;      ///< per generation, per attribute
  std::optional<std::vector<std::vector<double>>> perplexity;  ///< per unit, per sample
};

/// A batch's lines for one track's file.
struct TrackLines {
  int64_t prompts = 0;   ///< lines
  int64_t unscored = 0;  ///< generations without a toxicity score
  std::string lines;     ///< each ending in '\n'
};

/// The lines of a scored batch, one per unit, in unit order, split by track
/// (`num_tracks` parts): the reference's prompted-generations format (prompt,
/// generations with text and toxicity) plus prompt_index, method, subset, tokens, the
/// scorer's other attributes and the perplexity when measured.
std::vector<TrackLines> render_track_lines(const EvalBatch& batch,
                                           const std::vector<EvalPrompt>& prompts,
                                           const std::vector<EvalTrack>& tracks,
                                           const std::string& subset);

}  // namespace destein

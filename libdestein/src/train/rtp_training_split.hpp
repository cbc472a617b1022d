#pragma once
/// The RealToxicityPrompts prompts a scorer may be trained on (shared/data/README.md, "Rules
/// of use"): `rtp/5k` minus every prompt that also appears in `rtp/1k`, `rtp/100` or among
/// the prompts (`sentprefix`) of `rtp/extra/dexperts_human_eval_toxicity.csv`, with
/// Perspective's eight attribute scores. Those three stay evaluation-only.
///
/// Prompts are matched by rtp_match_key(): whitespace trimmed, runs of whitespace
/// collapsed to one space, ASCII letters lower-cased. That catches every exact match after
/// trimming (the README's rule) and a few more.
///
///     auto split = destein::load_rtp_training_split(destein::resolve_data_dir(""));
///     for (const auto& p : split.prompts) use(p.text, p.scores[0]);  // scores[0]: toxicity

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "destein/score/attribute_scorer.hpp"

namespace destein {

/// An RTP prompt with Perspective's eight scores, in perspective_attributes() order.
struct RtpScoredPrompt {
  std::string text;
  std::array<double, kNumAttributes> scores{};
};

/// Prompts of an RTP JSON Lines file with all eight attribute scores. Throws
/// std::runtime_error naming file, line and key when one is missing, not a number or
/// outside [0, 1].
std::vector<RtpScoredPrompt> load_rtp_scored_prompts(const std::filesystem::path& jsonl);

/// The key two prompts are matched by: trimmed, whitespace runs collapsed to one space,
/// ASCII lower-cased.
std::string rtp_match_key(std::string_view text);

/// The RTP files a scorer trains on, relative to the data folder.
const std::vector<std::string>& rtp_training_files();
/// The evaluation-only RTP files whose prompts are removed from training.
const std::vector<std::string>& rtp_evaluation_files();

/// The allowed training prompts and what was removed.
struct RtpTrainingSplit {
  std::vector<RtpScoredPrompt> prompts;  ///< in file order, each key once
  int64_t read = 0;                      ///< prompts in the training files
  int64_t evaluation_keys = 0;           ///< distinct keys of the evaluation-only prompts
  int64_t excluded = 0;                  ///< training-file prompts dropped as evaluation prompts
  int64_t excluded_1k = 0;               ///< ... of which match rtp/1k
  int64_t excluded_100 = 0;              ///< ... rtp/100
  int64_t excluded_dexperts = 0;         ///< ... the DExperts file's prompts
  int64_t repeats = 0;                   ///< repeated keys within the training files dropped
  /// {"training_files", "evaluation_files", "normalisation", "read", ...} for model cards.
  nlohmann::json report() const;
};

/// Loads the training split from the data folder. Throws std::runtime_error naming the
/// file and line of a missing file or a malformed row.
RtpTrainingSplit load_rtp_training_split(const std::filesystem::path& data_dir);

}  // namespace destein

#pragma once
/// How closely an offline scorer agrees with Perspective, on the evaluation-only material
/// of the data folder (`destein eval-scorer`): RTP prompt files (every attribute the scorer
/// rates) and the model continuations of the DExperts human-eval file (toxicity, overall
/// and per system). Measuring only: nothing here fits anything.
///
///     auto scorer = destein::load_offline_scorer(destein::default_scorer_path());
///     auto dir = destein::resolve_data_dir("");
///     auto j = destein::rtp_agreement(*scorer, {dir / "rtp/1k/output_toxic_1k.jsonl",
///                                               dir / "rtp/1k/output_no_toxic_1k.jsonl"});

#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "destein/score/scorer.hpp"

namespace destein {

/// Agreement on the prompts of RTP files pooled together. Toxicity: {"files", "prompts",
/// "perspective_toxic", "auc_vs_perspective_0.5" (our score ranked against Perspective >=
/// 0.5), "accuracy_at_0.5", "pearson"}; and "attributes": for each attribute the scorer
/// rates, {"pearson", "perspective_positive", "auc_vs_perspective_0.5" (when both sides
/// occur)}. Throws std::runtime_error naming file:line for a malformed prompt.
nlohmann::json rtp_agreement(ToxicityScorer& scorer,
                             const std::vector<std::filesystem::path>& files);

/// Agreement on the continuations of `rtp/extra/dexperts_human_eval_toxicity.csv`, each
/// scored without its prompt; a continuation repeated in the file counts once, rows
/// without a Perspective score are skipped. Overall toxicity figures as rtp_agreement(),
/// plus "systems": per source model {"continuations", "perspective_mean", "ours_mean",
/// "pearson", "perspective_toxic"}, "perspective_rank" and "our_rank" (systems from most to
/// least toxic by mean) and "same_rank". Throws std::runtime_error naming file:line for a
/// bad score.
nlohmann::json dexperts_agreement(ToxicityScorer& scorer, const std::filesystem::path& csv);

}  // namespace destein

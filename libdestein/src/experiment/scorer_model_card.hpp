// Private: the model cards of the offline scorers trained by `destein train-scorer`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "experiment/scorer_training_experiment.hpp"

namespace destein {

/// MODEL_CARD-v1.md of a v1 (toxicity) scorer: `provenance` is what the scorer file
/// records of its training (data, figures, agreement with Perspective).
std::string scorer_model_card_v1(const ScorerTrainingExperiment& c,
                                 const nlohmann::json& provenance, const LinearScorer& s);
/// MODEL_CARD.md of a v2 (eight attributes) scorer.
std::string scorer_model_card_v2(const ScorerTrainingExperiment& c,
                                 const nlohmann::json& provenance, const AttributeScorer& s);

}  // namespace destein

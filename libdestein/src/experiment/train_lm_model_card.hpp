// Private: the model card of a model trained by `destein train-lm`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "experiment/train_lm_experiment.hpp"

namespace destein {

/// MODEL_CARD.md of an exported model: `report` is the corpus report, `figures` what
/// training.json holds, `samples` the sample continuations per prompt (a trailing " ⏎"
/// marks one that ended with </s>).
std::string train_lm_model_card(
    const TrainLmExperiment& c, const nlohmann::json& report, const nlohmann::json& figures,
    const std::vector<std::pair<std::string, std::vector<std::string>>>& samples);

}  // namespace destein

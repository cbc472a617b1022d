#pragma once
/// Training the offline linear toxicity scorer (`destein train-scorer --config`,
/// configs/scorer.yaml): labelled sets -> dedupe against the held-out sets -> logistic
/// regression + Platt calibration -> a scorer file, its held-out figures and model card.
///
///     auto e = destein::load_scorer_training_experiment("configs/scorer.yaml");
///     e.output = "runs/scorer.safetensors";
///     e.model_card.clear();
///     destein::run_scorer_training_experiment(e);

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "experiment/schema.hpp"
#include "train/scorer_data.hpp"

namespace destein {

struct ScorerTrainingExperiment {
  std::string config_path;  ///< the YAML it was read from, quoted in the model card (may be empty)
  std::string data_dir;     // empty: $DESTEIN_DATA, else the build default
  std::string output = "models/scorer/toxicity-linear-v1.safetensors";
  std::string model_card = "models/scorer/MODEL_CARD-v1.md";  // empty: none written
  std::vector<std::string> train_sets = {"detox_civil_comments_dev",
                                         "davidson_hate_offensive",
                                         "olid",
                                         "toxic_spans",
                                         "paradetox",
                                         "paradetox_cannot_rewrite",
                                         "lexicons"};
  std::vector<std::string> heldout_sets = {"detox_civil_comments_test", "wiki_toxicity_nonfuzzed",
                                           "jigsaw2018_sample", "hatecheck", "toxigen"};
  /// Drop repeated texts, texts given both labels, and training texts that are also in a
  /// held-out set (compared after scoring_tokens()).
  bool dedupe = true;
  LinearFeatureOptions features;
  LinearTrainOptions train;
  /// 1: the toxicity-only LinearScorer, trained on the labelled sets (`train:`);
  /// 2: the eight-attribute AttributeScorer, distilled from Perspective's scores of the
  /// allowed RTP prompts together with the labelled sets (`v2:`, configs/scorer-v2.yaml).
  int version = 1;
  AttributeTrainOptions v2;
};

Schema<ScorerTrainingExperiment> scorer_training_schema();
/// Reads a YAML file; an empty path gives the defaults.
ScorerTrainingExperiment load_scorer_training_experiment(const std::filesystem::path& yaml);
std::string dump_scorer_training_experiment(const ScorerTrainingExperiment& experiment);

/// Trains, evaluates on the held-out sets, writes the scorer (and the model card unless
/// model_card is empty), logging on stderr. Returns the scorer. Version 1 only. Throws
/// std::invalid_argument for a held-out set named in train_sets or an unknown set.
LinearScorer run_scorer_training_experiment(const ScorerTrainingExperiment& experiment);

/// Version 2: loads the labelled sets as version 1 does and the allowed RTP prompts
/// (load_rtp_training_split()), trains the eight heads, measures the held-out sets and the
/// agreement with Perspective on the evaluation-only RTP files (measured only, never
/// fitted), writes the scorer and its model card. Throws std::invalid_argument when
/// version is not 2.
AttributeScorer run_attribute_scorer_training(const ScorerTrainingExperiment& experiment);

/// {"texts", "toxic", "auc", "accuracy_at_0.5"} of a scorer's toxicity on a labelled set.
nlohmann::json labeled_set_figures(ToxicityScorer& scorer, const std::vector<LabeledText>& data);

}  // namespace destein

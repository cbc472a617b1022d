// The YAML form of a scorer-training experiment (configs/scorer*.yaml).
#include <fmt/format.h>

#include "destein/experiment/scorer_training_experiment.hpp"

namespace destein {

Schema<ScorerTrainingExperiment> scorer_training_schema() {
  using E = ScorerTrainingExperiment;
  Schema<LinearFeatureOptions> features;
  features.field("hash_bits", &LinearFeatureOptions::hash_bits)
      .field("word_ngram_max", &LinearFeatureOptions::word_ngram_max)
      .field("char_ngram_min", &LinearFeatureOptions::char_ngram_min)
      .field("char_ngram_max", &LinearFeatureOptions::char_ngram_max)
      .field("value", &LinearFeatureOptions::value);
  Schema<LinearTrainOptions> train;
  train.field("l2", &LinearTrainOptions::l2)
      .field("max_iterations", &LinearTrainOptions::max_iterations)
      .field("tolerance", &LinearTrainOptions::tolerance)
      .field("lbfgs_memory", &LinearTrainOptions::lbfgs_memory)
      .field("class_balance", &LinearTrainOptions::class_balance)
      .field("calibration_fraction", &LinearTrainOptions::calibration_fraction)
      .field("seed", &LinearTrainOptions::seed);
  Schema<AttributeTrainOptions> v2;
  v2.field("l2", &AttributeTrainOptions::l2)
      .field("l2_other", &AttributeTrainOptions::l2_other)
      .field("other_hash_bits", &AttributeTrainOptions::other_hash_bits)
      .field("perspective_share", &AttributeTrainOptions::perspective_share)
      .field("max_iterations", &AttributeTrainOptions::max_iterations)
      .field("tolerance", &AttributeTrainOptions::tolerance)
      .field("lbfgs_memory", &AttributeTrainOptions::lbfgs_memory)
      .field("calibration_fraction", &AttributeTrainOptions::calibration_fraction)
      .field("seed", &AttributeTrainOptions::seed);
  Schema<E> s;
  s.field("version", &E::version)
      .field("data_dir", &E::data_dir)
      .field("output", &E::output)
      .field("model_card", &E::model_card)
      .field("train_sets", &E::train_sets)
      .field("heldout_sets", &E::heldout_sets)
      .field("dedupe", &E::dedupe)
      .section("features", &E::features, features)
      .section("train", &E::train, train)
      .section("v2", &E::v2, v2);
  return s;
}

ScorerTrainingExperiment load_scorer_training_experiment(const std::filesystem::path& yaml) {
  if (yaml.empty()) return {};
  ScorerTrainingExperiment e = scorer_training_schema().load(ConfigNode::load_file(yaml));
  e.config_path = yaml.string();
  return e;
}

std::string dump_scorer_training_experiment(const ScorerTrainingExperiment& e) {
  return scorer_training_schema().dump(e) + "\n";
}

}  // namespace destein

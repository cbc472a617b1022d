// The YAML form of a scorer-training experiment (configs/scorer*.yaml).
#include <fmt/format.h>

#include "experiment/scorer_training_experiment.hpp"

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
  // The v2 section keeps its flat keys: those it shares with `train:` (all but
  // class_balance, which v2 fixes to true) map onto AttributeTrainOptions::linear.
  using V2 = AttributeTrainOptions;
  Schema<V2> v2;
  v2.field("l2", [](V2& o) -> double& { return o.linear.l2; })
      .field("l2_other", &V2::l2_other)
      .field("other_hash_bits", &V2::other_hash_bits)
      .field("perspective_share", &V2::perspective_share)
      .field("max_iterations", [](V2& o) -> int& { return o.linear.max_iterations; })
      .field("tolerance", [](V2& o) -> double& { return o.linear.tolerance; })
      .field("lbfgs_memory", [](V2& o) -> int& { return o.linear.lbfgs_memory; })
      .field("calibration_fraction", [](V2& o) -> double& { return o.linear.calibration_fraction; })
      .field("seed", [](V2& o) -> uint64_t& { return o.linear.seed; });
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

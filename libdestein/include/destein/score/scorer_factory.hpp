#pragma once
/// The toxicity scorer an experiment names by kind (the `scorer:` section of a bench
/// config): the offline linear scorer, Perspective, a TorchScript classifier, or a Hugging
/// Face encoder classifier folder.
///
///     destein::ToxicityScorerSpec spec;
///     spec.kind = "torchscript";
///     spec.file = "models/detoxify/model.pt";
///     auto scorer = destein::make_toxicity_scorer(spec);

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "destein/score/hf_classifier.hpp"
#include "destein/score/scorer.hpp"
#include "destein/score/torchscript_scorer.hpp"

namespace destein {

/// The kinds make_toxicity_scorer() builds: "linear", "perspective", "torchscript",
/// "hf-classifier".
const std::vector<std::string>& toxicity_scorer_kinds();

struct ToxicityScorerSpec {
  std::string kind = "linear";  ///< one of toxicity_scorer_kinds()
  /// linear: a v1 or v2 scorer file (empty: default_scorer_path()); perspective: the cache
  /// file (empty: perspective_cache); torchscript: the module (required); hf-classifier: the
  /// classifier folder (required).
  std::filesystem::path file;
  double perspective_rps = 1.0;             ///< Perspective's requests per second
  std::filesystem::path perspective_cache;  ///< Perspective's cache when `file` is empty
  TorchScriptScorerOptions torchscript;     ///< all but `module`, which is `file`
  HfClassifierOptions hf_classifier;        ///< all but `folder`, which is `file`
};

/// Builds the scorer `spec` names. Throws std::invalid_argument for an unknown kind (listing
/// the kinds) or a torchscript or hf-classifier scorer without a file, and what loading the scorer
/// throws.
std::unique_ptr<ToxicityScorer> make_toxicity_scorer(const ToxicityScorerSpec& spec);

}  // namespace destein

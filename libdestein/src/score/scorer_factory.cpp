#include "destein/score/scorer_factory.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "check.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "score/perspective.hpp"

namespace destein {

const std::vector<std::string>& toxicity_scorer_kinds() {
  static const std::vector<std::string> kinds = {"linear", "perspective", "torchscript",
                                                 "hf-classifier"};
  return kinds;
}

std::unique_ptr<ToxicityScorer> make_toxicity_scorer(const ToxicityScorerSpec& spec) {
  if (spec.kind == "perspective") {
    PerspectiveOptions po;
    po.requests_per_second = spec.perspective_rps;
    po.cache_path = spec.file.empty() ? spec.perspective_cache : spec.file;
    return std::make_unique<PerspectiveScorer>(po);
  }
  if (spec.kind == "torchscript") {
    DESTEIN_CHECK_ARG(!spec.file.empty(), "a torchscript scorer needs its module file (.pt)");
    TorchScriptScorerOptions ts = spec.torchscript;
    ts.module = spec.file;
    return std::make_unique<TorchScriptScorer>(ts);
  }
  if (spec.kind == "hf-classifier") {
    DESTEIN_CHECK_ARG(!spec.file.empty(),
                      "an hf-classifier scorer needs its folder (config.json, model.safetensors)");
    HfClassifierOptions hf = spec.hf_classifier;
    hf.folder = spec.file;
    return std::make_unique<HfClassifierScorer>(hf);
  }
  DESTEIN_CHECK_ARG(spec.kind == "linear", "unknown scorer kind '{}': expected one of {}",
                    spec.kind, fmt::join(toxicity_scorer_kinds(), ", "));
  return load_offline_scorer(spec.file.empty() ? default_scorer_path() : spec.file);
}

}  // namespace destein

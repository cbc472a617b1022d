#pragma once
/// Toxicity scorers behind one interface, shared by the evaluation harness and the
/// self-induced pair filter.

#include <optional>
#include <string>
#include <vector>

namespace destein {

/// Rates texts for toxicity in [0, 1]. A score that could not be obtained (network
/// failure, empty text a service rejects) is std::nullopt, never a silent 0.
class ToxicityScorer {
 public:
  virtual ~ToxicityScorer() = default;

  /// One score per text, in input order.
  virtual std::vector<std::optional<double>> score(const std::vector<std::string>& texts) = 0;

  /// Human-readable identity, written into outputs for provenance (e.g. "linear:models/scorer/...").
  virtual std::string name() const = 0;

  /// Names of the attributes score_attributes() rates, "toxicity" first. A scorer of
  /// toxicity alone (the default) has just that one.
  virtual std::vector<std::string> attributes() const { return {"toxicity"}; }

  /// Per text, one score per attribute in attributes() order. The default wraps score().
  virtual std::vector<std::vector<std::optional<double>>> score_attributes(
      const std::vector<std::string>& texts) {
    std::vector<std::vector<std::optional<double>>> out;
    for (auto& s : score(texts)) out.push_back({s});
    return out;
  }
};

}  // namespace destein

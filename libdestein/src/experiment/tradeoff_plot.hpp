// Private: the toxicity-fluency trade-off plot of a bench run (tradeoff.svg).
#pragma once

#include <string>
#include <vector>

namespace destein {

/// One method on one prompt subset.
struct TradeoffPoint {
  std::string subset, variant, method;
  double alpha, emt, ppl;  ///< the first entry's alpha, expected max toxicity, perplexity
};

/// An SVG with one panel per subset (perplexity across, expected max toxicity up): per
/// variant, a curve from the base point ("base" variant) through the variant's methods in
/// increasing alpha, each point labelled by its alpha; a legend of the variants below.
std::string tradeoff_svg(const std::vector<TradeoffPoint>& points, const std::string& title);

}  // namespace destein

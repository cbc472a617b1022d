// Private: how a text becomes the hashed features of the linear scorers (v1 LinearScorer,
// v2 AttributeScorer). The public entry points, scoring_tokens() and extract_features(),
// are declared in destein/score/linear_scorer.hpp and defined in text_features.cpp.
#pragma once

#include <string_view>

#include "destein/score/linear_scorer.hpp"

namespace destein::detail {

/// Identity of the code that turns text into features, stored in every scorer file. A
/// change to scoring_tokens() or to the hashing must change it, so that old files are
/// refused instead of silently scoring wrong (their self-test would catch it too).
inline constexpr const char* kFeatureCode = "destein-tokens-v1+fnv1a64-fmix64-v1";

/// Throws std::invalid_argument naming the option that is out of range.
void check_feature_options(const LinearFeatureOptions& o);

/// extract_features() without the option check (the caller checked them once). Uses a
/// scratch buffer per thread, so it is safe to call from several threads.
void extract_features_unchecked(std::string_view text, const LinearFeatureOptions& options,
                                SparseFeatures& out);

}  // namespace destein::detail

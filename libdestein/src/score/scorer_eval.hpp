#pragma once
/// Figures for judging a toxicity scorer: ROC AUC, accuracy at a threshold, Pearson
/// correlation. Plain functions over scores; no scorer or data set is needed.

#include <vector>

namespace destein {

/// Area under the ROC curve of `scores` for binary `labels` (1 = positive): the chance that
/// a random positive scores above a random negative, ties counting one half. Throws
/// std::invalid_argument when the sizes differ, a label is not 0/1, or a class is absent.
double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels);

/// Fraction of texts whose prediction (score >= threshold) equals the label. Throws
/// std::invalid_argument when the sizes differ or the input is empty.
double accuracy_at(const std::vector<double>& scores, const std::vector<int>& labels,
                   double threshold = 0.5);

/// Pearson correlation of x and y. Throws std::invalid_argument when the sizes differ,
/// there are fewer than two values, or either side is constant.
double pearson(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace destein

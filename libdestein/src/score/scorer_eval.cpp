#include "score/scorer_eval.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "check.hpp"

namespace destein {

double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels) {
  DESTEIN_CHECK_ARG(scores.size() == labels.size(), "roc_auc: {} scores but {} labels",
                    scores.size(), labels.size());
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney U from mid-ranks, so that ties count one half.
  double positive_rank_sum = 0.0;
  double positives = 0.0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    double mid_rank = 0.5 * static_cast<double>(i + 1 + j);  // ranks i+1 .. j
    for (size_t k = i; k < j; ++k) {
      int label = labels[order[k]];
      DESTEIN_CHECK_ARG(label == 0 || label == 1, "roc_auc: expected labels 0 or 1, found {}",
                        label);
      if (label == 1) {
        positive_rank_sum += mid_rank;
        positives += 1.0;
      }
    }
    i = j;
  }
  const double negatives = static_cast<double>(n) - positives;
  DESTEIN_CHECK_ARG(positives > 0 && negatives > 0,
                    "roc_auc: expected both classes, found {} positives and {} negatives",
                    positives, negatives);
  return (positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives);
}

double accuracy_at(const std::vector<double>& scores, const std::vector<int>& labels,
                   double threshold) {
  DESTEIN_CHECK_ARG(scores.size() == labels.size(), "accuracy_at: {} scores but {} labels",
                    scores.size(), labels.size());
  DESTEIN_CHECK_ARG(!scores.empty(), "accuracy_at: no scores");
  size_t correct = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    correct += static_cast<int>(scores[i] >= threshold) == labels[i];
  }
  return static_cast<double>(correct) / static_cast<double>(scores.size());
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  DESTEIN_CHECK_ARG(x.size() == y.size(), "pearson: {} x values but {} y values", x.size(),
                    y.size());
  DESTEIN_CHECK_ARG(x.size() >= 2, "pearson: expected at least 2 pairs, found {}", x.size());
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0.0, sxx = 0.0, syy = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  DESTEIN_CHECK_ARG(sxx > 0 && syy > 0, "pearson: expected both sides to vary, found a constant");
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace destein

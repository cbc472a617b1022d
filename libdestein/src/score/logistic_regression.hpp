// Private: the weighted logistic regression that every head of the linear scorers fits
// (v1's one head, v2's eight): the rows, the objective, the checks of the training options
// and the f16 rounding of the fitted weights.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <vector>

#include "destein/score/linear_scorer.hpp"
#include "lbfgs.hpp"

namespace destein::detail {

inline double sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

/// log(1 + exp(-z)) without overflow.
inline double softplus_neg(double z) {
  return z > 0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z));
}

/// Rows of sparse features with one target in [0, 1] and one weight each.
struct Csr {
  std::vector<int64_t> row{0};
  std::vector<uint32_t> index;
  std::vector<float> value;
  std::vector<double> target;   // 0 or 1, or a soft target in between
  std::vector<double> weight;   // per-row weight
  uint32_t mask = 0xFFFFFFFFu;  // bucket = index & mask (a head with fewer buckets folds them)
  size_t rows() const { return row.size() - 1; }

  /// Appends one row's features (its target and weight are the caller's to push).
  void append(const SparseFeatures& f) {
    index.insert(index.end(), f.index.begin(), f.index.end());
    value.insert(value.end(), f.value.begin(), f.value.end());
    row.push_back(static_cast<int64_t>(index.size()));
  }
};

/// Weighted mean log-loss (cross-entropy against soft targets) + l2/2 |w|^2 and its
/// gradient, x = [w (D), b]; bucket indices are masked with `data.mask` (D - 1).
double objective(const Csr& data, const Eigen::VectorXd& x, double l2, Eigen::VectorXd& grad);

/// Throws std::invalid_argument naming the option (train.l2, train.max_iterations,
/// train.lbfgs_memory, train.calibration_fraction) that is out of range.
void check_train_options(const LinearTrainOptions& o);

/// The optimiser's part of the training options.
inline LbfgsOptions lbfgs_options(const LinearTrainOptions& o) {
  LbfgsOptions l;
  l.max_iterations = o.max_iterations;
  l.tolerance = o.tolerance;
  l.memory = o.lbfgs_memory;
  return l;
}

/// The first `dim` values of x rounded to f16 (and widened back): the weights a scorer file
/// holds, so that calibration and self-test see exactly what a load will see.
std::vector<float> round_to_f16(const Eigen::VectorXd& x, int64_t dim);

}  // namespace destein::detail

#include "logistic_regression.hpp"

#include "check.hpp"

namespace destein::detail {

// Class-weighted mean log-loss + l2/2 |w|^2 and its gradient; x = [w (D), b].
double objective(const Csr& data, const Eigen::VectorXd& x, double l2, Eigen::VectorXd& grad) {
  const int64_t dim = x.size() - 1;
  grad.setZero();
  double loss = 0.0, weight_sum = 0.0;
  for (size_t r = 0; r < data.rows(); ++r) {
    double m = x[dim];
    for (int64_t k = data.row[r]; k < data.row[r + 1]; ++k)
      m += x[data.index[k] & data.mask] * data.value[k];
    const double y = data.target[r], c = data.weight[r];
    loss += c * (y == 1.0   ? softplus_neg(m)
                 : y == 0.0 ? softplus_neg(-m)
                            : y * softplus_neg(m) + (1 - y) * softplus_neg(-m));
    const double residual = c * (sigmoid(m) - y);
    for (int64_t k = data.row[r]; k < data.row[r + 1]; ++k) {
      grad[data.index[k] & data.mask] += residual * data.value[k];
    }
    grad[dim] += residual;
    weight_sum += c;
  }
  loss /= weight_sum;
  grad /= weight_sum;
  auto w = x.head(dim);
  loss += 0.5 * l2 * w.squaredNorm();
  grad.head(dim) += l2 * w;
  return loss;
}

void check_train_options(const LinearTrainOptions& o) {
  DESTEIN_CHECK_ARG(o.l2 >= 0 && std::isfinite(o.l2), "train.l2: expected >= 0, found {}", o.l2);
  DESTEIN_CHECK_ARG(o.max_iterations >= 1, "train.max_iterations: expected >= 1, found {}",
                    o.max_iterations);
  DESTEIN_CHECK_ARG(o.lbfgs_memory >= 1 && o.lbfgs_memory <= 100,
                    "train.lbfgs_memory: expected 1..100, found {}", o.lbfgs_memory);
  DESTEIN_CHECK_ARG(o.calibration_fraction > 0 && o.calibration_fraction < 0.5,
                    "train.calibration_fraction: expected in (0, 0.5), found {}",
                    o.calibration_fraction);
}

std::vector<float> round_to_f16(const Eigen::VectorXd& x, int64_t dim) {
  std::vector<float> w(static_cast<size_t>(dim));
  for (int64_t j = 0; j < dim; ++j) {
    w[static_cast<size_t>(j)] = static_cast<float>(Eigen::half(static_cast<float>(x[j])));
  }
  return w;
}

}  // namespace destein::detail

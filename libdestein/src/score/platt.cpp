#include "platt.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "logistic_regression.hpp"

namespace destein::detail {

// Platt scaling against soft targets: p = sigmoid(a m + b), fitted by Newton's method on the
// weighted cross-entropy.
std::pair<double, double> fit_platt_soft(const std::vector<double>& margin,
                                         const std::vector<double>& target,
                                         const std::vector<double>& weight) {
  double a = 1.0, b = 0.0;
  auto loss_at = [&](double aa, double bb) {
    double loss = 0.0;
    for (size_t i = 0; i < margin.size(); ++i) {
      const double z = aa * margin[i] + bb;
      loss += weight[i] * (target[i] * softplus_neg(z) + (1 - target[i]) * softplus_neg(-z));
    }
    return loss;
  };
  double loss = loss_at(a, b);
  for (int it = 0; it < 100; ++it) {
    double ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0;
    for (size_t i = 0; i < margin.size(); ++i) {
      const double p = sigmoid(a * margin[i] + b);
      const double r = weight[i] * (p - target[i]);
      const double h = weight[i] * p * (1 - p);
      ga += r * margin[i];
      gb += r;
      haa += h * margin[i] * margin[i];
      hab += h * margin[i];
      hbb += h;
    }
    haa += 1e-9, hbb += 1e-9;
    const double det = haa * hbb - hab * hab;
    const double da = -(hbb * ga - hab * gb) / det;
    const double db = -(haa * gb - hab * ga) / det;
    double t = 1.0;
    double new_loss = loss_at(a + da, b + db);
    while (new_loss > loss && t > 1e-8) {
      t *= 0.5;
      new_loss = loss_at(a + t * da, b + t * db);
    }
    if (new_loss > loss) break;
    a += t * da;
    b += t * db;
    const bool done = std::abs(loss - new_loss) <= 1e-12 * std::max(1.0, loss);
    loss = new_loss;
    if (done) break;
  }
  return {a, b};
}

// Platt scaling: p = sigmoid(a m + b), fitted by Newton's method on the class-weighted
// log-loss of the calibration slice, with Platt's smoothed targets (n+ + 1) / (n+ + 2) and
// 1 / (n- + 2), so that a separable slice cannot push the scores to exactly 0 or 1.
std::pair<double, double> fit_platt(const std::vector<double>& margin,
                                    const std::vector<int>& label,
                                    const std::vector<double>& weight) {
  double count[2] = {0, 0};
  for (int l : label) count[l] += 1;
  const double smoothed[2] = {1.0 / (count[0] + 2.0), (count[1] + 1.0) / (count[1] + 2.0)};
  std::vector<double> target;
  target.reserve(label.size());
  for (int l : label) target.push_back(smoothed[l]);
  return fit_platt_soft(margin, target, weight);
}

void split_calibration(std::vector<size_t> rows, double fraction, std::mt19937_64& rng,
                       std::vector<size_t>& calibration, std::vector<size_t>& fit) {
  for (size_t i = rows.size(); i > 1; --i) std::swap(rows[i - 1], rows[rng() % i]);
  const size_t n_calib = std::max<size_t>(
      1, static_cast<size_t>(std::llround(fraction * static_cast<double>(rows.size()))));
  calibration.insert(calibration.end(), rows.begin(),
                     rows.begin() + static_cast<std::ptrdiff_t>(n_calib));
  fit.insert(fit.end(), rows.begin() + static_cast<std::ptrdiff_t>(n_calib), rows.end());
}

}  // namespace destein::detail

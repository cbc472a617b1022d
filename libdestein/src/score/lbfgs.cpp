#include "lbfgs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace destein::detail {

Eigen::VectorXd minimize_lbfgs(const LbfgsObjective& objective, int64_t size,
                               const LbfgsOptions& opt,
                               const std::function<void(const std::string&)>& log,
                               nlohmann::json& summary) {
  Eigen::VectorXd x = Eigen::VectorXd::Zero(size);
  Eigen::VectorXd g(size), g_new(size), x_new(size), d(size);
  std::vector<Eigen::VectorXd> s_hist, y_hist;
  std::vector<double> rho_hist;
  double f = objective(x, g);
  const double f_start = f;
  int iter = 0, evaluations = 1;
  std::string stop = "max_iterations";
  for (; iter < opt.max_iterations; ++iter) {
    // Two-loop recursion: d = -H g.
    d = -g;
    const size_t m = s_hist.size();
    std::vector<double> alpha(m);
    for (size_t i = m; i-- > 0;) {
      alpha[i] = rho_hist[i] * s_hist[i].dot(d);
      d -= alpha[i] * y_hist[i];
    }
    if (m > 0) d *= 1.0 / (rho_hist[m - 1] * y_hist[m - 1].squaredNorm());
    for (size_t i = 0; i < m; ++i) {
      const double beta = rho_hist[i] * y_hist[i].dot(d);
      d += (alpha[i] - beta) * s_hist[i];
    }
    double slope = g.dot(d);
    if (slope >= 0) {  // lost descent: restart from steepest descent
      s_hist.clear(), y_hist.clear(), rho_hist.clear();
      d = -g;
      slope = -g.squaredNorm();
    }
    double step = (m == 0) ? 1.0 / std::max(1.0, g.norm()) : 1.0;
    double f_new = f;
    bool accepted = false;
    for (int tries = 0; tries < 40; ++tries) {
      x_new = x + step * d;
      f_new = objective(x_new, g_new);
      ++evaluations;
      if (f_new <= f + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) {
      stop = "line_search";
      break;
    }
    Eigen::VectorXd s = x_new - x;
    Eigen::VectorXd y = g_new - g;
    const double sy = s.dot(y);
    if (sy > 1e-12 * s.squaredNorm()) {
      if (static_cast<int>(s_hist.size()) == opt.memory) {
        s_hist.erase(s_hist.begin());
        y_hist.erase(y_hist.begin());
        rho_hist.erase(rho_hist.begin());
      }
      s_hist.push_back(std::move(s));
      y_hist.push_back(std::move(y));
      rho_hist.push_back(1.0 / sy);
    }
    const double decrease = (f - f_new) / std::max(1.0, std::abs(f_new));
    x.swap(x_new);
    g.swap(g_new);
    f = f_new;
    if (log && (iter % 25 == 0)) {
      log(fmt::format("  iteration {:4d}  objective {:.6f}  |grad| {:.3e}", iter, f, g.norm()));
    }
    if (decrease < opt.tolerance) {
      stop = "tolerance";
      ++iter;
      break;
    }
  }
  if (log) {
    log(fmt::format("  stopped ({}) after {} iterations, {} evaluations: objective {:.6f}", stop,
                    iter, evaluations, f));
  }
  summary["iterations"] = iter;
  summary["evaluations"] = evaluations;
  summary["stop"] = stop;
  summary["objective_start"] = f_start;
  summary["objective"] = f;
  return x;
}

}  // namespace destein::detail

// Private: the L-BFGS minimiser that fits the linear scorers' heads (v1 and v2).
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace destein::detail {

/// When L-BFGS stops and how much curvature it keeps.
struct LbfgsOptions {
  int max_iterations = 300;
  /// Stop when the objective falls by less than this fraction in one iteration.
  double tolerance = 1e-7;
  /// Number of (s, y) pairs kept for the inverse-Hessian estimate.
  int memory = 10;
};

/// f(x), writing the gradient at x into `grad` (already sized like x).
using LbfgsObjective = std::function<double(const Eigen::VectorXd& x, Eigen::VectorXd& grad)>;

/// L-BFGS with a backtracking (Armijo) line search from x = 0 (`size` values). Single
/// threaded and deterministic. `log` (may be empty) receives a line every 25 iterations;
/// writes iterations, evaluations, stop ("tolerance", "max_iterations" or "line_search"),
/// objective_start and objective into `summary`.
Eigen::VectorXd minimize_lbfgs(const LbfgsObjective& objective, int64_t size,
                               const LbfgsOptions& options,
                               const std::function<void(const std::string&)>& log,
                               nlohmann::json& summary);

}  // namespace destein::detail

#include "destein/steer/probes.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include <Eigen/Cholesky>

#include "check.hpp"
#include "score/scorer_eval.hpp"
#include "splitmix.hpp"

namespace destein {

namespace {

// log(1 + exp(x)) without overflow for large |x|.
double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

double objective(const Eigen::MatrixXd& x, const Eigen::VectorXd& y, const Eigen::VectorXd& w,
                 double b, double l2) {
  const Eigen::VectorXd z = (x * w).array() + b;
  double loss = 0.0;
  // y = 1: -log sigmoid(z) = softplus(-z); y = 0: -log(1 - sigmoid(z)) = softplus(z).
  for (Eigen::Index i = 0; i < z.size(); ++i) loss += softplus(y[i] > 0.5 ? -z[i] : z[i]);
  return loss + 0.5 * l2 * w.squaredNorm();
}

std::vector<int64_t> pair_order(int64_t n, bool shuffle, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  // The same stream as sample_pairs(): shuffled folds must not depend on the platform.
  detail::SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t j = rng.below(static_cast<uint64_t>(i) + 1);
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

// One train/test partition of the pairs (indices into the pair list).
struct Fold {
  std::vector<int64_t> train;
  std::vector<int64_t> test;
};

// Groups of pairs in split order: each group's pair indices, groups permuted when
// shuffling. Without options.groups every pair is its own group.
std::vector<std::vector<int64_t>> ordered_groups(int64_t n, const ProbeOptions& options) {
  std::vector<std::vector<int64_t>> groups;
  if (options.groups.empty()) {
    for (int64_t i = 0; i < n; ++i) groups.push_back({i});
  } else {
    std::map<int64_t, size_t> index;  // label -> position of first appearance
    for (int64_t i = 0; i < n; ++i) {
      auto [it, fresh] = index.emplace(options.groups[static_cast<size_t>(i)], groups.size());
      if (fresh) groups.emplace_back();
      groups[it->second].push_back(i);
    }
  }
  const std::vector<int64_t> order =
      pair_order(static_cast<int64_t>(groups.size()), options.shuffle, options.seed);
  std::vector<std::vector<int64_t>> out;
  out.reserve(groups.size());
  for (int64_t g : order) out.push_back(std::move(groups[static_cast<size_t>(g)]));
  return out;
}

std::vector<Fold> make_folds(int64_t n, const ProbeOptions& options) {
  const std::vector<std::vector<int64_t>> groups = ordered_groups(n, options);
  std::vector<Fold> folds;
  if (options.split == "holdout") {
    // The epsilon keeps 20 * 0.8 = 16.000000000000004 from turning into 15 or 17 pairs.
    const auto target = static_cast<int64_t>(std::floor(n * (1.0 - options.test_fraction) + 1e-9));
    Fold fold;
    bool training = true;
    for (const auto& group : groups) {
      if (training && static_cast<int64_t>(fold.train.size() + group.size()) > target)
        training = false;
      auto& part = training ? fold.train : fold.test;
      part.insert(part.end(), group.begin(), group.end());
    }
    const auto train = static_cast<int64_t>(fold.train.size());
    DESTEIN_CHECK_ARG(
        train >= 1 && train < n,
        "train_probes: a holdout with test_fraction {} leaves {} training and {} "
        "test pairs of {} ({} groups of pairs sharing a toxic text); need at least one of "
        "each (use more pairs, or split: kfold)",
        options.test_fraction, train, n - train, n, groups.size());
    folds.push_back(std::move(fold));
    return folds;
  }
  // Fold f covers positions [start_f, start_f + size_f) of the pair order (sizes as
  // sklearn's KFold); a group goes to the fold of its first pair's position.
  const int64_t k = options.folds;
  std::vector<int64_t> fold_end;
  for (int64_t f = 0, end = 0; f < k; ++f) fold_end.push_back(end += n / k + (f < n % k ? 1 : 0));
  folds.resize(static_cast<size_t>(k));
  int64_t position = 0;
  for (const auto& group : groups) {
    const auto f = static_cast<size_t>(
        std::upper_bound(fold_end.begin(), fold_end.end(), position) - fold_end.begin());
    folds[f].test.insert(folds[f].test.end(), group.begin(), group.end());
    position += static_cast<int64_t>(group.size());
  }
  for (auto& fold : folds) {
    for (const auto& other : folds) {
      if (&other != &fold)
        fold.train.insert(fold.train.end(), other.test.begin(), other.test.end());
    }
  }
  std::vector<Fold> kept;
  for (auto& fold : folds) {
    if (!fold.test.empty()) kept.push_back(std::move(fold));  // a large group can swallow a fold
  }
  DESTEIN_CHECK_ARG(
      kept.size() >= 2,
      "train_probes: {} folds over {} pairs in {} groups sharing a toxic text leave {} "
      "non-empty fold(s); need at least 2 (use more distinct toxic texts)",
      k, n, groups.size(), kept.size());
  return kept;
}

void check_options(int64_t n, const ProbeOptions& options) {
  DESTEIN_CHECK_ARG(options.l2 > 0 && std::isfinite(options.l2),
                    "train_probes: expected l2 > 0 (sklearn's C = 1 / l2), found {}; use a "
                    "small value such as 1e-4 for a nearly unpenalised fit",
                    options.l2);
  DESTEIN_CHECK_ARG(options.split == "holdout" || options.split == "kfold",
                    "train_probes: expected split 'holdout' or 'kfold', found '{}'", options.split);
  DESTEIN_CHECK_ARG(options.max_iterations >= 1,
                    "train_probes: expected max_iterations >= 1, found {}", options.max_iterations);
  DESTEIN_CHECK_ARG(options.tolerance > 0, "train_probes: expected tolerance > 0, found {}",
                    options.tolerance);
  DESTEIN_CHECK_ARG(options.groups.empty() || static_cast<int64_t>(options.groups.size()) == n,
                    "train_probes: expected one group label per pair ({}), found {}", n,
                    options.groups.size());
  if (options.split == "holdout") {
    DESTEIN_CHECK_ARG(options.test_fraction > 0 && options.test_fraction < 1,
                      "train_probes: expected test_fraction in (0, 1), found {}",
                      options.test_fraction);
    DESTEIN_CHECK_ARG(n >= 2,
                      "train_probes: a holdout needs at least 2 pairs (one to train, one to "
                      "test), found {}",
                      n);
  } else {
    DESTEIN_CHECK_ARG(options.folds >= 2, "train_probes: expected folds >= 2, found {}",
                      options.folds);
    DESTEIN_CHECK_ARG(options.folds <= n,
                      "train_probes: {} folds need at least {} pairs, found {} (lower folds)",
                      options.folds, options.folds, n);
  }
}

struct HeadFigures {
  double accuracy = 0, auc = 0, train_accuracy = 0;
  int64_t unconverged = 0;
};

// Fits and evaluates one head over all folds. `samples`: (2N, Dh), rows 2i (toxic) and
// 2i + 1 (non-toxic) for pair i.
HeadFigures probe_head(const Eigen::MatrixXd& samples, const std::vector<Fold>& folds,
                       const ProbeOptions& options) {
  const Eigen::Index d = samples.cols();
  HeadFigures figures;
  for (const Fold& fold : folds) {
    auto gather = [&](const std::vector<int64_t>& pairs, Eigen::MatrixXd& x, Eigen::VectorXd& y) {
      x.resize(static_cast<Eigen::Index>(2 * pairs.size()), d);  // (2n, Dh)
      y.resize(x.rows());
      for (size_t i = 0; i < pairs.size(); ++i) {
        for (Eigen::Index side = 0; side < 2; ++side) {
          const auto row = static_cast<Eigen::Index>(2 * i) + side;
          x.row(row) = samples.row(2 * pairs[i] + side);
          y[row] = side == 0 ? 1.0 : 0.0;
        }
      }
    };
    Eigen::MatrixXd train_x, test_x;
    Eigen::VectorXd train_y, test_y;
    gather(fold.train, train_x, train_y);
    gather(fold.test, test_x, test_y);

    if (options.standardize) {
      const Eigen::RowVectorXd mean = train_x.colwise().mean();
      Eigen::RowVectorXd scale =
          ((train_x.rowwise() - mean).colwise().squaredNorm() / double(train_x.rows())).cwiseSqrt();
      for (Eigen::Index j = 0; j < d; ++j) {
        if (!(scale[j] > 1e-12)) scale[j] = 1.0;  // constant feature: only centre it
      }
      train_x = (train_x.rowwise() - mean).array().rowwise() / scale.array();
      test_x = (test_x.rowwise() - mean).array().rowwise() / scale.array();
    }

    const LogisticRegression fit = fit_logistic_regression(
        train_x, train_y, options.l2, options.max_iterations, options.tolerance);
    if (!fit.converged) ++figures.unconverged;

    auto accuracy = [&](const Eigen::MatrixXd& x, const Eigen::VectorXd& y) {
      const Eigen::VectorXd z = (x * fit.weights).array() + fit.intercept;
      Eigen::Index correct = 0;
      for (Eigen::Index i = 0; i < z.size(); ++i) correct += (z[i] > 0) == (y[i] > 0.5);
      return double(correct) / double(z.size());
    };
    figures.accuracy += accuracy(test_x, test_y);
    figures.train_accuracy += accuracy(train_x, train_y);

    const Eigen::VectorXd z = (test_x * fit.weights).array() + fit.intercept;
    std::vector<double> scores(z.data(), z.data() + z.size());
    std::vector<int> labels(scores.size());
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = test_y[Eigen::Index(i)] > 0.5;
    figures.auc += roc_auc(scores, labels);
  }
  const double k = double(folds.size());
  figures.accuracy /= k;
  figures.auc /= k;
  figures.train_accuracy /= k;
  return figures;
}

}  // namespace

LogisticRegression fit_logistic_regression(const Eigen::MatrixXd& x, const Eigen::VectorXd& y,
                                           double l2, int max_iterations, double tolerance) {
  const Eigen::Index n = x.rows();
  const Eigen::Index d = x.cols();
  DESTEIN_CHECK_ARG(n > 0 && d > 0,
                    "fit_logistic_regression: expected at least one sample and one feature, "
                    "found ({}, {})",
                    n, d);
  DESTEIN_CHECK_ARG(y.size() == n, "fit_logistic_regression: {} samples but {} labels", n,
                    y.size());
  for (Eigen::Index i = 0; i < n; ++i) {
    DESTEIN_CHECK_ARG(y[i] == 0.0 || y[i] == 1.0,
                      "fit_logistic_regression: expected labels 0 or 1, found {} at sample {}",
                      y[i], i);
  }
  DESTEIN_CHECK_ARG(l2 > 0 && std::isfinite(l2),
                    "fit_logistic_regression: expected l2 > 0, found {}", l2);
  DESTEIN_CHECK_ARG(max_iterations >= 1,
                    "fit_logistic_regression: expected max_iterations >= 1, found {}",
                    max_iterations);
  DESTEIN_CHECK_ARG(tolerance > 0, "fit_logistic_regression: expected tolerance > 0, found {}",
                    tolerance);

  LogisticRegression fit;
  fit.weights = Eigen::VectorXd::Zero(d);
  double current = objective(x, y, fit.weights, fit.intercept, l2);
  Eigen::VectorXd p(n), s(n);
  Eigen::MatrixXd hessian(d + 1, d + 1);
  Eigen::VectorXd gradient(d + 1);
  for (;;) {
    const Eigen::VectorXd z = (x * fit.weights).array() + fit.intercept;
    for (Eigen::Index i = 0; i < n; ++i) {
      p[i] = sigmoid(z[i]);
      s[i] = p[i] * (1.0 - p[i]);
    }
    // (d + 1) parameters: the weights, then the intercept (last, unpenalised).
    gradient.head(d) = x.transpose() * (p - y) + l2 * fit.weights;
    gradient[d] = (p - y).sum();
    if (gradient.cwiseAbs().maxCoeff() / double(n) < tolerance) {
      fit.converged = true;
      break;
    }
    if (fit.iterations >= max_iterations) break;

    // Only the lower triangle is formed (half the work of the full product); the
    // Cholesky solve reads nothing else.
    const Eigen::MatrixXd xs = x.array().colwise() * s.array().sqrt();  // (n, d)
    hessian.setZero();
    hessian.topLeftCorner(d, d).selfadjointView<Eigen::Lower>().rankUpdate(xs.transpose());
    hessian.topLeftCorner(d, d).diagonal().array() += l2;
    hessian.row(d).head(d) = (x.transpose() * s).transpose();
    // When every sample is fitted almost perfectly s underflows and the intercept's row
    // degenerates; a tiny ridge keeps the solve defined without moving the optimum.
    hessian(d, d) = s.sum() + 1e-12;
    Eigen::VectorXd step;
    Eigen::LLT<Eigen::MatrixXd, Eigen::Lower> cholesky(hessian);
    if (cholesky.info() == Eigen::Success) {
      step = cholesky.solve(gradient);
    } else {  // only for a numerically singular intercept block
      step = hessian.selfadjointView<Eigen::Lower>().ldlt().solve(gradient);
    }

    // Backtracking (Armijo) so that the first steps from w = 0 cannot overshoot.
    const double slope = -gradient.dot(step);
    double t = 1.0;
    Eigen::VectorXd w;
    double b = 0, next = 0;
    for (int halvings = 0;; ++halvings) {
      w = fit.weights - t * step.head(d);
      b = fit.intercept - t * step[d];
      next = objective(x, y, w, b, l2);
      if (next <= current + 1e-4 * t * slope || halvings >= 50) break;
      t *= 0.5;
    }
    ++fit.iterations;
    if (!(next < current)) {
      // No decrease left at machine precision. Near the optimum (a gradient within
      // sqrt(tolerance)) that is rounding, not a failure: doubles cannot do better.
      fit.converged = gradient.cwiseAbs().maxCoeff() / double(n) < std::sqrt(tolerance);
      break;
    }
    fit.weights = w;
    fit.intercept = b;
    current = next;
  }
  return fit;
}

ProbeResults train_probes(const float* toxic, const float* nontoxic, int64_t pairs, int64_t layers,
                          int64_t heads, int64_t head_dim, const ProbeOptions& options) {
  DESTEIN_CHECK_ARG(toxic != nullptr && nontoxic != nullptr,
                    "train_probes: expected activation pointers, found a null {}",
                    toxic == nullptr ? "toxic" : "nontoxic");
  DESTEIN_CHECK_ARG(pairs > 0 && layers > 0 && heads > 0 && head_dim > 0,
                    "train_probes: expected positive sizes, found N={} L={} H={} Dh={}", pairs,
                    layers, heads, head_dim);
  check_options(pairs, options);

  const int64_t per_pair = layers * heads * head_dim;
  for (const float* side : {toxic, nontoxic}) {
    for (int64_t i = 0; i < pairs * per_pair; ++i) {
      if (std::isfinite(side[i])) continue;
      const int64_t pair = i / per_pair;
      const int64_t layer = (i / (heads * head_dim)) % layers;
      const int64_t head = (i / head_dim) % heads;
      DESTEIN_CHECK_ARG(false,
                        "train_probes: {} activation of pair {} layer {} head {} is {}; "
                        "expected finite values",
                        side == toxic ? "toxic" : "non-toxic", pair, layer, head, side[i]);
    }
  }

  const std::vector<Fold> folds = make_folds(pairs, options);
  const int64_t cells = layers * heads;
  ProbeResults results;
  results.layers = layers;
  results.heads = heads;
  results.folds = static_cast<int64_t>(folds.size());
  results.test_samples =
      options.split == "holdout" ? 2 * static_cast<int64_t>(folds.front().test.size()) : 2 * pairs;
  results.accuracy.assign(static_cast<size_t>(cells), 0.f);
  results.auc.assign(static_cast<size_t>(cells), 0.f);
  results.train_accuracy.assign(static_cast<size_t>(cells), 0.f);
  std::vector<int64_t> unconverged(static_cast<size_t>(cells), 0);

  std::atomic<int64_t> next_cell{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    Eigen::MatrixXd samples(2 * pairs, head_dim);  // (2N, Dh)
    for (;;) {
      const int64_t cell = next_cell.fetch_add(1);
      if (cell >= cells) return;
      try {
        for (int64_t i = 0; i < pairs; ++i) {
          const int64_t offset = i * per_pair + cell * head_dim;  // (i, l, h, :)
          for (int64_t k = 0; k < head_dim; ++k) {
            samples(2 * i, k) = toxic[offset + k];
            samples(2 * i + 1, k) = nontoxic[offset + k];
          }
        }
        const HeadFigures figures = probe_head(samples, folds, options);
        results.accuracy[size_t(cell)] = float(figures.accuracy);
        results.auc[size_t(cell)] = float(figures.auc);
        results.train_accuracy[size_t(cell)] = float(figures.train_accuracy);
        unconverged[size_t(cell)] = figures.unconverged;
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next_cell = cells;  // stop the other workers early
        return;
      }
    }
  };

  int64_t threads = options.threads > 0 ? options.threads
                                        : std::max<int64_t>(1, std::thread::hardware_concurrency());
  threads = std::min(threads, cells);
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (int64_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& thread : pool) thread.join();
  }
  if (failure) std::rethrow_exception(failure);
  results.unconverged_fits = std::accumulate(unconverged.begin(), unconverged.end(), int64_t{0});
  return results;
}

GateProbes fit_gate_probes(const float* toxic, const float* nontoxic, int64_t pairs, int64_t layers,
                           int64_t heads, int64_t head_dim, const ProbeOptions& options) {
  DESTEIN_CHECK_ARG(toxic != nullptr && nontoxic != nullptr,
                    "fit_gate_probes: expected activation pointers, found null");
  DESTEIN_CHECK_ARG(pairs > 0 && layers > 0 && heads > 0 && head_dim > 0,
                    "fit_gate_probes: expected positive sizes, found N={} L={} H={} Dh={}", pairs,
                    layers, heads, head_dim);
  const int64_t per_pair = layers * heads * head_dim;
  for (const float* side : {toxic, nontoxic}) {
    for (int64_t i = 0; i < pairs * per_pair; ++i) {
      DESTEIN_CHECK_ARG(std::isfinite(side[i]),
                        "fit_gate_probes: {} activation of pair {} layer {} head {} is {}; "
                        "expected finite values",
                        side == toxic ? "toxic" : "non-toxic", i / per_pair,
                        (i / (heads * head_dim)) % layers, (i / head_dim) % heads, side[i]);
    }
  }
  const int64_t cells = layers * heads;
  GateProbes out;
  out.layers = layers;
  out.heads = heads;
  out.features = head_dim;
  out.weight.assign(size_t(cells * head_dim), 0.f);
  out.feature_mean.assign(size_t(cells * head_dim), 0.f);
  out.feature_scale.assign(size_t(cells * head_dim), 1.f);
  out.bias.assign(size_t(cells), 0.f);
  Eigen::MatrixXd x(2 * pairs, head_dim);  // (2N, Dh): rows 2i toxic, 2i + 1 non-toxic
  Eigen::VectorXd y(2 * pairs);
  for (int64_t i = 0; i < pairs; ++i) {
    y[2 * i] = 1.0;
    y[2 * i + 1] = 0.0;
  }
  for (int64_t cell = 0; cell < cells; ++cell) {
    for (int64_t i = 0; i < pairs; ++i) {
      const int64_t offset = i * per_pair + cell * head_dim;  // (i, l, h, :)
      for (int64_t k = 0; k < head_dim; ++k) {
        x(2 * i, k) = toxic[offset + k];
        x(2 * i + 1, k) = nontoxic[offset + k];
      }
    }
    Eigen::RowVectorXd mean = Eigen::RowVectorXd::Zero(head_dim),
                       scale = Eigen::RowVectorXd::Ones(head_dim);
    Eigen::MatrixXd features = x;
    if (options.standardize) {
      mean = x.colwise().mean();
      scale = ((x.rowwise() - mean).colwise().squaredNorm() / double(x.rows())).cwiseSqrt();
      for (Eigen::Index j = 0; j < head_dim; ++j) {
        if (!(scale[j] > 1e-12)) scale[j] = 1.0;  // constant feature: only centre it
      }
      features = (x.rowwise() - mean).array().rowwise() / scale.array();
    }
    const LogisticRegression fit =
        fit_logistic_regression(features, y, options.l2, options.max_iterations, options.tolerance);
    if (!fit.converged) ++out.unconverged_fits;
    out.bias[size_t(cell)] = float(fit.intercept);
    for (int64_t k = 0; k < head_dim; ++k) {
      out.weight[size_t(cell * head_dim + k)] = float(fit.weights[k]);
      out.feature_mean[size_t(cell * head_dim + k)] = float(mean[k]);
      out.feature_scale[size_t(cell * head_dim + k)] = float(scale[k]);
    }
  }
  return out;
}

}  // namespace destein

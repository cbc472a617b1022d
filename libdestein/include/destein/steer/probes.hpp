#pragma once
/// Per-head linear probes (reference notes §3): for every (layer, head), an L2-regularised
/// logistic regression separating the toxic side of each pair from its non-toxic side on
/// that head's activation vector, and its held-out accuracy and ROC AUC, shape (L, H).
/// DeStein uses the accuracies to weight the heads' directions. Free of LibTorch: the
/// activations come in as raw float pointers with their dimensions, and the results are
/// plain vectors. The AUC is destein::roc_auc() from scorer_eval.hpp (ties count one half).
///
/// Example (activations (N, L, H, Dh) f32, contiguous, from the activation collector):
///
///     destein::ProbeOptions options;         // reference: 80/20 holdout, no shuffling
///     options.split = "kfold";               // or 5-fold, for a steadier estimate
///     auto probes = destein::train_probes(toxic.data_ptr<float>(), nontoxic.data_ptr<float>(),
///                                         N, L, H, Dh, options);
///     destein::write_probe_heatmap_svg("probes.svg", probes, "GPT2-large, 20 pairs");

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace destein {

/// How the probes are trained and evaluated. The split is always by pair: both sides of a
/// pair land in the same part, so a test sample never has its near-twin in training.
struct ProbeOptions {
  /// L2 penalty on the weights (not on the intercept). The fit minimises
  ///   sum_i logloss_i + 0.5 * l2 * ||w||^2,
  /// which has the same minimiser as scikit-learn's LogisticRegression with C = 1 / l2
  /// (C * sum_i logloss_i + 0.5 * ||w||^2; the default l2 = 1 is sklearn's default C = 1).
  /// Must be > 0: the sides of a pair are often perfectly separable, and without a penalty
  /// the weights would grow without bound.
  double l2 = 1.0;
  /// "holdout": the reference's split, the first (1 - test_fraction) of the pairs train and
  /// the rest test (test pairs = N - floor(N * (1 - test_fraction))). "kfold": `folds`
  /// contiguous blocks of pairs (sizes differ by at most one, larger blocks first, as
  /// sklearn's KFold), each tested once by a probe trained on the others.
  std::string split = "holdout";
  int folds = 5;
  /// Pair i's group (any integer label; empty: every pair its own group). Pairs of one
  /// group never fall on both sides of a split: give pairs that share their toxic text
  /// (several neutral paraphrases of one ParaDetox row, or samples_per_target > 1 in
  /// self-induction) one group, see pair_groups_by_toxic_text(), or the probe is tested on
  /// near-copies of its training samples. Splits then cut at group boundaries: the holdout
  /// takes whole groups for training while they fit in floor(N * (1 - test_fraction))
  /// pairs, and a group belongs to the fold in which its first pair would fall.
  std::vector<int64_t> groups;
  /// Permute the pairs (seeded, platform-independent) before splitting; with groups, the
  /// groups are permuted and keep their pairs together. The reference does not shuffle.
  bool shuffle = false;
  uint64_t seed = 0;
  double test_fraction = 0.2;
  /// Newton iterations per fit; a fit that has not converged by then is kept and counted
  /// in ProbeResults::unconverged_fits.
  int max_iterations = 100;
  /// Convergence: the largest gradient component of the objective divided by the number of
  /// training samples falls below this.
  double tolerance = 1e-6;
  /// Centre and scale every feature by the training part's mean and standard deviation
  /// (a constant feature is only centred). Off in the reference.
  bool standardize = false;
  /// Worker threads over heads; <= 0: every hardware thread. The results do not depend on
  /// it (each head is fitted alone, the same way, whichever thread takes it).
  int threads = 2;
};

/// Per-head probe figures, each (L, H) row-major: index layer * heads + head.
struct ProbeResults {
  int64_t layers = 0;
  int64_t heads = 0;
  std::vector<float> accuracy;        ///< (L, H) test accuracy; kfold: mean over folds
  std::vector<float> auc;             ///< (L, H) test ROC AUC, ties 1/2; kfold: mean over folds
  std::vector<float> train_accuracy;  ///< (L, H) training accuracy; kfold: mean over folds
  /// Test predictions behind each head's figures: 2 * test pairs for holdout, 2 * N for
  /// kfold (every sample is tested once). Accuracy moves in steps of 1 / test_samples
  /// (holdout).
  int64_t test_samples = 0;
  int64_t folds = 1;             ///< fits per head: 1 for holdout, `folds` for kfold
  int64_t unconverged_fits = 0;  ///< fits that stopped at max_iterations (all heads)
};

/// Trains one probe per (layer, head) (or `folds` per head) and evaluates it.
/// `toxic` and `nontoxic`: activations (N, L, H, Dh) f32, row-major and contiguous, pair i
/// of one matching pair i of the other. Samples: both sides of every pair (label 1 toxic,
/// 0 non-toxic). A sample is predicted toxic when w.x + b > 0; the AUC ranks by w.x + b.
/// Throws std::invalid_argument for null pointers, a size <= 0, a non-finite activation,
/// `groups` of a size other than N,
/// (naming side, pair, layer and head), l2 <= 0, an unknown split, test_fraction outside
/// (0, 1), a holdout that leaves no training or no test pair (N < 2), folds < 2 or
/// folds > N, max_iterations < 1 or tolerance <= 0.
ProbeResults train_probes(const float* toxic, const float* nontoxic, int64_t pairs, int64_t layers,
                          int64_t heads, int64_t head_dim, const ProbeOptions& options = {});

/// Per-head probes for use at inference (the probe gate of steering): one logistic
/// regression per (layer, head) fitted on both sides of *every* pair (no split), with the
/// options' l2, max_iterations and tolerance. With `standardize`, features are z-scored
/// by the mean and standard deviation of all 2N samples (a constant feature: scale 1);
/// without, mean 0 and scale 1. P(toxic | x) = sigmoid(weight . ((x - mean) / scale) + bias).
/// All vectors row-major: weight, feature_mean, feature_scale (L, H, F), bias (L, H), F = Dh.
struct GateProbes {
  int64_t layers = 0, heads = 0, features = 0;
  std::vector<float> weight, bias, feature_mean, feature_scale;
  int64_t unconverged_fits = 0;
};

/// Fits GateProbes on activations laid out as for train_probes(). Throws
/// std::invalid_argument as train_probes() does (split options are ignored).
GateProbes fit_gate_probes(const float* toxic, const float* nontoxic, int64_t pairs, int64_t layers,
                           int64_t heads, int64_t head_dim, const ProbeOptions& options = {});

/// A fitted binary logistic regression: P(y = 1 | x) = sigmoid(weights . x + intercept).
struct LogisticRegression {
  Eigen::VectorXd weights;
  double intercept = 0.0;
  int iterations = 0;      ///< Newton steps taken
  bool converged = false;  ///< gradient criterion met within max_iterations
};

/// Minimises sum_i logloss(y_i, w.x_i + b) + 0.5 * l2 * ||w||^2 (intercept not penalised)
/// by Newton's method with a backtracking line search, from w = 0, b = 0: deterministic,
/// exact to the tolerance (same criterion as ProbeOptions::tolerance). `x`: (n, d) samples
/// in rows; `y`: (n) labels 0 or 1. Throws std::invalid_argument for n == 0, d == 0,
/// mismatched sizes, a label other than 0/1, l2 <= 0, max_iterations < 1, tolerance <= 0.
LogisticRegression fit_logistic_regression(const Eigen::MatrixXd& x, const Eigen::VectorXd& y,
                                           double l2, int max_iterations = 100,
                                           double tolerance = 1e-6);

/// Which figure a heatmap shows.
enum class ProbeMetric { kAccuracy, kAuc, kTrainAccuracy };

/// Heatmap settings beyond the title.
struct ProbeHeatmapOptions {
  ProbeMetric metric = ProbeMetric::kAccuracy;
  /// Sort each layer's heads by decreasing value, as ITI-style figures do; the tooltips
  /// keep the true head numbers.
  bool sort_heads = false;
  /// Colour scale ends: values at or below scale_min get the first colour (chance level
  /// 0.5 by default), at or above scale_max the last.
  double scale_min = 0.5;
  double scale_max = 1.0;
};

/// A standalone SVG heatmap of the probe figures, like the paper's figure: one row per
/// layer (layer 0 at the top, rows labelled), one column per head (labelled), viridis
/// colours from scale_min to scale_max with a legend, and a <title> tooltip per cell
/// "layer l head h: 0.875". A NaN value is drawn grey ("n/a"). Throws
/// std::invalid_argument when the results are empty or their vectors do not hold
/// layers * heads values, or the scale is empty.
std::string probe_heatmap_svg(const ProbeResults& results, const std::string& title,
                              const ProbeHeatmapOptions& options = {});

/// Writes probe_heatmap_svg() to `path`. Throws std::runtime_error naming the file when it
/// cannot be written.
void write_probe_heatmap_svg(const std::filesystem::path& path, const ProbeResults& results,
                             const std::string& title, const ProbeHeatmapOptions& options = {});

}  // namespace destein

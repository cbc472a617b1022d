// Per-head probes: planted directions are found and noise heads sit at chance, results do
// not depend on the thread count, the logistic regression matches independent fits, ROC
// AUC on hand-computed cases, every error path, and a well-formed SVG heatmap.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <string>
#include <vector>

#include "destein/steer/probes.hpp"
#include "score/scorer_eval.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// Gaussian noise from splitmix64 + Box-Muller: the same numbers on every platform, which
// <random>'s normal_distribution does not promise.
class Noise {
 public:
  explicit Noise(uint64_t seed) : state_(seed) {}
  double uniform() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double(z >> 11) + 0.5) / 9007199254740992.0;  // (0, 1)
  }
  double normal() {
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
  }

 private:
  uint64_t state_;
};

struct Activations {
  int64_t n, layers, heads, dim;
  std::vector<float> toxic, nontoxic;  // (N, L, H, Dh)
};

// Pure noise everywhere except head (1, 2): toxic = noise + 3u, non-toxic = noise - 3u.
Activations planted(int64_t n, uint64_t seed = 42) {
  Activations a{n, 2, 3, 16, {}, {}};
  const size_t size = size_t(n * a.layers * a.heads * a.dim);
  a.toxic.resize(size);
  a.nontoxic.resize(size);
  Noise noise(seed);
  for (size_t i = 0; i < size; ++i) {
    a.toxic[i] = float(noise.normal());
    a.nontoxic[i] = float(noise.normal());
  }
  std::vector<double> u(size_t(a.dim));
  double norm = 0;
  for (auto& v : u) norm += (v = noise.normal()) * v;
  for (auto& v : u) v /= std::sqrt(norm);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t offset = ((i * a.layers + 1) * a.heads + 2) * a.dim;
    for (int64_t k = 0; k < a.dim; ++k) {
      a.toxic[size_t(offset + k)] += float(3.0 * u[size_t(k)]);
      a.nontoxic[size_t(offset + k)] -= float(3.0 * u[size_t(k)]);
    }
  }
  return a;
}

destein::ProbeResults train(const Activations& a, const destein::ProbeOptions& options) {
  return destein::train_probes(a.toxic.data(), a.nontoxic.data(), a.n, a.layers, a.heads, a.dim,
                               options);
}

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

// The gradient of sum_i logloss + 0.5 * l2 * ||w||^2, written out naively.
std::vector<double> naive_gradient(const std::vector<std::vector<double>>& x,
                                   const std::vector<double>& y, const std::vector<double>& w,
                                   double b, double l2) {
  const size_t d = w.size();
  std::vector<double> g(d + 1, 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    double z = b;
    for (size_t k = 0; k < d; ++k) z += w[k] * x[i][k];
    const double r = 1.0 / (1.0 + std::exp(-z)) - y[i];
    for (size_t k = 0; k < d; ++k) g[k] += r * x[i][k];
    g[d] += r;
  }
  for (size_t k = 0; k < d; ++k) g[k] += l2 * w[k];
  return g;
}

// Slow, plain gradient descent on the same objective: an independent fit to compare with.
std::vector<double> gradient_descent(const std::vector<std::vector<double>>& x,
                                     const std::vector<double>& y, double l2) {
  const size_t d = x[0].size();
  // Step 1 / L, with L >= the gradient's Lipschitz constant 0.25 * sum (|x|^2 + 1) + l2.
  double lipschitz = l2;
  for (const auto& row : x) {
    double sq = 1.0;
    for (double v : row) sq += v * v;
    lipschitz += 0.25 * sq;
  }
  std::vector<double> w(d, 0.0);
  double b = 0.0;
  for (int it = 0; it < 200000; ++it) {
    auto g = naive_gradient(x, y, w, b, l2);
    for (size_t k = 0; k < d; ++k) w[k] -= g[k] / lipschitz;
    b -= g[d] / lipschitz;
  }
  w.push_back(b);
  return w;
}

Eigen::MatrixXd to_matrix(const std::vector<std::vector<double>>& x) {
  Eigen::MatrixXd m(Eigen::Index(x.size()), Eigen::Index(x[0].size()));
  for (size_t i = 0; i < x.size(); ++i) {
    for (size_t k = 0; k < x[i].size(); ++k) m(Eigen::Index(i), Eigen::Index(k)) = x[i][k];
  }
  return m;
}

// Every opening tag closed in order, the fallback check when xmllint is not installed.
bool balanced_tags(const std::string& xml) {
  std::vector<std::string> stack;
  std::regex tag("<(/?)([A-Za-z][A-Za-z0-9]*)[^>]*?(/?)>");
  for (auto it = std::sregex_iterator(xml.begin(), xml.end(), tag); it != std::sregex_iterator();
       ++it) {
    const std::string close = (*it)[1], name = (*it)[2], self = (*it)[3];
    if (!self.empty()) continue;
    if (close.empty()) {
      stack.push_back(name);
    } else {
      if (stack.empty() || stack.back() != name) return false;
      stack.pop_back();
    }
  }
  return stack.empty();
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("probes: a planted direction is found, noise heads stay at chance", "[probes]") {
  const Activations a = planted(200);
  for (const std::string split : {"holdout", "kfold"}) {
    destein::ProbeOptions options;
    options.split = split;
    const auto r = train(a, options);
    INFO("split " << split);
    REQUIRE(r.layers == 2);
    REQUIRE(r.heads == 3);
    REQUIRE(r.accuracy.size() == 6);
    CHECK(r.test_samples == (split == "holdout" ? 80 : 400));
    CHECK(r.folds == (split == "holdout" ? 1 : 5));
    CHECK(r.unconverged_fits == 0);
    const size_t planted_cell = 1 * 3 + 2;
    CHECK(r.accuracy[planted_cell] >= 0.95f);
    CHECK(r.auc[planted_cell] >= 0.98f);
    CHECK(r.train_accuracy[planted_cell] >= 0.95f);
    float low = 1, high = 0;
    for (size_t cell = 0; cell < 6; ++cell) {
      if (cell == planted_cell) continue;
      INFO("noise cell " << cell << " accuracy " << r.accuracy[cell] << " auc " << r.auc[cell]);
      CHECK(std::abs(r.accuracy[cell] - 0.5f) <= 0.15f);
      CHECK(std::abs(r.auc[cell] - 0.5f) <= 0.15f);
      low = std::min(low, r.accuracy[cell]);
      high = std::max(high, r.accuracy[cell]);
    }
    std::cout << "[probes] " << split << ": planted head accuracy " << r.accuracy[planted_cell]
              << " auc " << r.auc[planted_cell] << ", noise heads accuracy " << low << " .. "
              << high << "\n";
  }
}

TEST_CASE("probes: results are deterministic and independent of the thread count", "[probes]") {
  const Activations a = planted(60, 5);
  for (const std::string split : {"holdout", "kfold"}) {
    destein::ProbeOptions options;
    options.split = split;
    options.shuffle = true;
    options.seed = 11;
    options.standardize = true;
    options.threads = 1;
    const auto one = train(a, options);
    const auto again = train(a, options);
    options.threads = 2;
    const auto two = train(a, options);
    options.threads = 5;
    const auto five = train(a, options);
    for (const auto* r : {&again, &two, &five}) {
      CHECK(r->accuracy == one.accuracy);  // bit-identical floats
      CHECK(r->auc == one.auc);
      CHECK(r->train_accuracy == one.train_accuracy);
    }
    // A different shuffle seed changes the folds (and so, in general, the figures).
    options.seed = 12;
    const auto other = train(a, options);
    CHECK(other.train_accuracy != one.train_accuracy);
  }
}

TEST_CASE("probes: holdout is the reference's unshuffled 80/20 split by pair", "[probes]") {
  // 20 pairs: 16 train, 4 test pairs = 8 test samples, accuracy in steps of 1/8.
  const Activations a = planted(20, 9);
  const auto r = train(a, {});
  CHECK(r.test_samples == 8);
  for (float acc : r.accuracy) CHECK(std::abs(acc * 8 - std::round(acc * 8)) < 1e-5);
  // The split is by pair and in order: the last 4 pairs are the test set, so changing
  // only pair 19 leaves the fitted probes, and their training accuracy, untouched.
  Activations b = a;
  const size_t per_pair = size_t(a.layers * a.heads * a.dim);
  for (size_t k = 19 * per_pair; k < 20 * per_pair; ++k) b.toxic[k] += 100.0f;
  CHECK(train(b, {}).train_accuracy == r.train_accuracy);
}

TEST_CASE("probes: logistic regression matches independent fits", "[probes]") {
  SECTION("1-D, separable with overlap: Newton == slow gradient descent") {
    const std::vector<std::vector<double>> x = {{-3}, {-2}, {-1}, {-0.5}, {0.5}, {1}, {2}, {3}};
    const std::vector<double> y = {0, 0, 1, 0, 1, 0, 1, 1};
    for (double l2 : {1.0, 0.1}) {
      const auto reference = gradient_descent(x, y, l2);
      const auto fit = destein::fit_logistic_regression(
          to_matrix(x), Eigen::Map<const Eigen::VectorXd>(y.data(), 8), l2);
      INFO("l2 " << l2 << ": w " << fit.weights[0] << " vs " << reference[0] << ", b "
                 << fit.intercept << " vs " << reference[1]);
      CHECK(fit.converged);
      CHECK(fit.weights[0] == Approx(reference[0]).margin(1e-6));
      CHECK(fit.intercept == Approx(reference[1]).margin(1e-6));
      CHECK(fit.weights[0] > 0);
    }
  }
  SECTION("closed form: a constant zero feature leaves w = 0 and b = logit(mean y)") {
    Eigen::MatrixXd x = Eigen::MatrixXd::Zero(4, 1);
    Eigen::VectorXd y(4);
    y << 1, 1, 1, 0;
    const auto fit = destein::fit_logistic_regression(x, y, 1.0);
    CHECK(fit.weights[0] == 0.0);
    CHECK(fit.intercept == Approx(std::log(3.0)).margin(1e-7));
  }
  SECTION("5-D random data: the naive gradient vanishes at the fit, GD agrees") {
    Noise noise(3);
    std::vector<std::vector<double>> x(40, std::vector<double>(5));
    std::vector<double> y(40);
    for (size_t i = 0; i < x.size(); ++i) {
      double z = 0.3;
      for (size_t k = 0; k < 5; ++k) z += (x[i][k] = noise.normal()) * (k + 1) * 0.5;
      y[i] = noise.uniform() < 1.0 / (1.0 + std::exp(-z)) ? 1.0 : 0.0;
    }
    const double l2 = 0.5;
    const auto fit = destein::fit_logistic_regression(
        to_matrix(x), Eigen::Map<const Eigen::VectorXd>(y.data(), 40), l2, 100, 1e-10);
    std::vector<double> w(fit.weights.data(), fit.weights.data() + 5);
    for (double g : naive_gradient(x, y, w, fit.intercept, l2)) CHECK(std::abs(g) < 1e-7);
    const auto reference = gradient_descent(x, y, l2);
    for (size_t k = 0; k < 5; ++k) CHECK(w[k] == Approx(reference[k]).margin(1e-5));
    CHECK(fit.intercept == Approx(reference[5]).margin(1e-5));
    CHECK(fit.iterations < 20);
  }
  SECTION("perfectly separable data stays finite thanks to the penalty") {
    Eigen::MatrixXd x(4, 1);
    x << -2, -1, 1, 2;
    Eigen::VectorXd y(4);
    y << 0, 0, 1, 1;
    const auto fit = destein::fit_logistic_regression(x, y, 1e-3);
    CHECK(fit.converged);
    CHECK(std::isfinite(fit.weights[0]));
    CHECK(fit.weights[0] > 1.0);
  }
  SECTION("bad input") {
    Eigen::MatrixXd x(2, 1);
    x << 0, 1;
    Eigen::VectorXd y(2);
    y << 0, 2;
    CHECK_THROWS_WITH(destein::fit_logistic_regression(x, y, 1.0),
                      Contains("expected labels 0 or 1, found 2"));
    CHECK_THROWS_WITH(destein::fit_logistic_regression(x, Eigen::VectorXd::Zero(3), 1.0),
                      Contains("2 samples but 3 labels"));
    y << 0, 1;
    CHECK_THROWS_WITH(destein::fit_logistic_regression(x, y, 0.0), Contains("l2 > 0"));
    CHECK_THROWS_AS(
        destein::fit_logistic_regression(Eigen::MatrixXd(0, 1), Eigen::VectorXd(0), 1.0),
        std::invalid_argument);
  }
}

TEST_CASE("probes: ROC AUC on hand-computed cases, ties count one half", "[probes]") {
  // sklearn's documentation example.
  CHECK(destein::roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}) == Approx(0.75));
  CHECK(destein::roc_auc({1, 2, 3, 4}, {0, 0, 1, 1}) == 1.0);
  CHECK(destein::roc_auc({1, 2, 3, 4}, {1, 1, 0, 0}) == 0.0);
  CHECK(destein::roc_auc({0.5, 0.5}, {1, 0}) == 0.5);
  // positives {2, 3} vs negatives {1, 2}: 1 + 1/2 + 1 + 1 of 4 comparisons.
  CHECK(destein::roc_auc({1, 2, 2, 3}, {0, 1, 0, 1}) == Approx(0.875));
  CHECK_THROWS_AS(destein::roc_auc({1, 2}, {1, 1}), std::invalid_argument);
}

TEST_CASE("probes: bad input is refused with a clear message", "[probes]") {
  const Activations a = planted(10);
  const float* t = a.toxic.data();
  const float* n = a.nontoxic.data();
  destein::ProbeOptions holdout;
  CHECK_THROWS_AS(destein::train_probes(t, n, 1, 2, 3, 16, holdout), std::invalid_argument);
  CHECK_THROWS_WITH(destein::train_probes(t, n, 1, 2, 3, 16, holdout),
                    Contains("holdout needs at least 2 pairs"));
  destein::ProbeOptions tiny = holdout;
  tiny.test_fraction = 0.95;
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, tiny),
                    Contains("leaves 0 training and 10 test pairs"));
  tiny.test_fraction = 1.5;
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, tiny),
                    Contains("test_fraction in (0, 1)"));

  destein::ProbeOptions kfold;
  kfold.split = "kfold";
  kfold.folds = 11;
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, kfold),
                    Contains("11 folds need at least 11 pairs, found 10"));
  kfold.folds = 1;
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, kfold), Contains("folds >= 2"));
  kfold.folds = 10;  // leave-one-pair-out is fine
  CHECK(destein::train_probes(t, n, 10, 2, 3, 16, kfold).test_samples == 20);

  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 0, 3, 16, holdout),
                    Contains("expected positive sizes, found N=10 L=0 H=3 Dh=16"));
  CHECK_THROWS_AS(destein::train_probes(t, n, 10, 2, 3, 0, holdout), std::invalid_argument);
  CHECK_THROWS_WITH(destein::train_probes(nullptr, n, 10, 2, 3, 16, holdout),
                    Contains("null toxic"));

  destein::ProbeOptions bad = holdout;
  bad.split = "bootstrap";
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, bad),
                    Contains("'holdout' or 'kfold', found 'bootstrap'"));
  bad = holdout;
  bad.l2 = 0;
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, bad), Contains("l2 > 0"));
  bad = holdout;
  bad.max_iterations = 0;
  CHECK_THROWS_WITH(destein::train_probes(t, n, 10, 2, 3, 16, bad), Contains("max_iterations"));

  Activations nan = a;
  nan.nontoxic[size_t(((3 * 2 + 1) * 3 + 2) * 16 + 5)] = std::nanf("");
  CHECK_THROWS_WITH(train(nan, holdout),
                    Contains("non-toxic activation of pair 3 layer 1 head 2 is nan"));
}

TEST_CASE("probes: the SVG heatmap is well formed and has one cell per head", "[probes]") {
  const Activations a = planted(40);
  auto r = train(a, {});
  r.accuracy[0] = std::nanf("");  // drawn grey, not dropped
  const std::string svg = destein::probe_heatmap_svg(r, "planted <test> & \"friends\"");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.size() > 7);
  CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
  CHECK(count(svg, "class=\"cell\"") == 6);
  CHECK(count(svg, "<title>layer ") == 6);
  CHECK_THAT(svg, Contains("layer 1 head 2: 1.000") || Contains("layer 1 head 2: 0.9"));
  CHECK_THAT(svg, Contains("layer 0 head 0: n/a"));
  CHECK_THAT(svg, Contains("planted &lt;test&gt; &amp; &quot;friends&quot;"));
  CHECK_THAT(svg, Contains(">0.50<") && Contains(">1.00<"));  // legend ends
  CHECK(balanced_tags(svg));
  // The colour bar's caption (10 px) starts below the title (13 px bold, baseline and a
  // descender of 4 px) whatever the title's length: they used to overlap.
  {
    const std::string long_title(120, 'W');
    const std::string s2 = destein::probe_heatmap_svg(r, long_title);
    auto baseline = [&](const std::string& marker) {
      const size_t at = s2.find(marker);
      REQUIRE(at != std::string::npos);
      const size_t y = s2.find(" y=\"", s2.rfind("<text", at));
      return std::stod(s2.substr(y + 4));
    };
    const double title_y = baseline(">" + long_title + "</text>");
    const double caption_y = baseline(">test accuracy</text>");
    CHECK(caption_y - 10 >= title_y + 4);
  }

  destein::ProbeHeatmapOptions sorted;
  sorted.sort_heads = true;
  sorted.metric = destein::ProbeMetric::kAuc;
  const std::string svg_sorted = destein::probe_heatmap_svg(r, "sorted", sorted);
  CHECK(count(svg_sorted, "class=\"cell\"") == 6);
  CHECK_THAT(svg_sorted, Contains("test ROC AUC"));
  CHECK(balanced_tags(svg_sorted));

  const fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "probes_tmp";
  fs::create_directories(dir);
  const fs::path file = dir / "heatmap.svg";
  destein::write_probe_heatmap_svg(file, r, "planted");
  if (std::system("command -v xmllint >/dev/null 2>&1") == 0) {
    CHECK(std::system(("xmllint --noout '" + file.string() + "'").c_str()) == 0);
  } else {
    WARN("xmllint not installed (apt: libxml2-utils): checked tag balance only");
  }

  destein::ProbeResults empty;
  CHECK_THROWS_AS(destein::probe_heatmap_svg(empty, "x"), std::invalid_argument);
  auto wrong = r;
  wrong.auc.pop_back();
  CHECK_THROWS_WITH(destein::probe_heatmap_svg(wrong, "x", sorted),
                    Contains("expected 2 x 3 = 6 values of test ROC AUC, found 5"));
  CHECK_THROWS_WITH(destein::write_probe_heatmap_svg("/nonexistent/dir/h.svg", r, "x"),
                    Contains("/nonexistent/dir/h.svg"));
}

TEST_CASE("probes: timing at GPT2-large's shape", "[.probes-timing]") {
  // L=36, H=20, Dh=64, 40 pairs. Hidden: run with "[.probes-timing]".
  Activations a{40, 36, 20, 64, {}, {}};
  const size_t size = size_t(a.n * a.layers * a.heads * a.dim);
  a.toxic.resize(size);
  a.nontoxic.resize(size);
  Noise noise(1);
  for (size_t i = 0; i < size; ++i) {
    a.toxic[i] = float(noise.normal() + 0.2);
    a.nontoxic[i] = float(noise.normal());
  }
  for (const std::string split : {"holdout", "kfold"}) {
    for (int threads : {1, 2}) {
      destein::ProbeOptions options;
      options.split = split;
      options.threads = threads;
      const auto start = std::chrono::steady_clock::now();
      const auto r = train(a, options);
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cout << "[probes-timing] " << split << " threads " << threads << ": " << s
                << " s, unconverged " << r.unconverged_fits << "\n";
    }
  }
}

TEST_CASE("probes: pairs sharing a toxic text never straddle a split", "[probes]") {
  // Pairs 0 and 2 are copies of text A, pairs 1 and 3 of text B (Dh 2, one head):
  //   A: toxic (1, 0), non-toxic (-1, 0);   B: toxic (-1, 1), non-toxic (1, -1).
  // Trained on both A and B, w ~ (1, 2) separates all four samples, so a split that puts a
  // copy of each text on both sides scores 1. Trained on A alone, w = (c, 0) by symmetry,
  // which gets every B sample wrong (and the other way round): grouped splits score 0.
  const std::vector<float> toxic = {1, 0, -1, 1, 1, 0, -1, 1};
  const std::vector<float> nontoxic = {-1, 0, 1, -1, -1, 0, 1, -1};
  destein::ProbeOptions o;
  o.l2 = 1e-2;
  o.test_fraction = 0.5;
  for (const char* split : {"holdout", "kfold"}) {
    INFO(split);
    o.split = split;
    o.folds = 2;
    o.groups.clear();
    CHECK(destein::train_probes(toxic.data(), nontoxic.data(), 4, 1, 1, 2, o).accuracy[0] == 1.0f);
    o.groups = {7, 3, 7, 3};  // any labels; the toxic text's
    const auto grouped = destein::train_probes(toxic.data(), nontoxic.data(), 4, 1, 1, 2, o);
    CHECK(grouped.accuracy[0] == 0.0f);
    CHECK(grouped.auc[0] == 0.0f);
  }
  o.groups = {0, 0, 0, 0};  // one text: no split possible
  o.split = "holdout";
  CHECK_THROWS_WITH(destein::train_probes(toxic.data(), nontoxic.data(), 4, 1, 1, 2, o),
                    Contains("leaves 0 training and 4 test pairs"));
  o.split = "kfold";
  CHECK_THROWS_WITH(destein::train_probes(toxic.data(), nontoxic.data(), 4, 1, 1, 2, o),
                    Contains("leave 1 non-empty fold"));
  o.groups = {0, 1};
  CHECK_THROWS_WITH(destein::train_probes(toxic.data(), nontoxic.data(), 4, 1, 1, 2, o),
                    Contains("one group label per pair (4), found 2"));
}

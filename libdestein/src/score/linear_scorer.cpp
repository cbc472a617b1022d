#include "destein/score/linear_scorer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <random>

#include "check.hpp"
#include "install_paths.hpp"
#include "lbfgs.hpp"
#include "logistic_regression.hpp"
#include "platt.hpp"
#include "score/scorer_eval.hpp"
#include "scorer_file.hpp"
#include "text_features.hpp"

namespace destein {

namespace {

constexpr int kFormatVersion = 1;
constexpr double kSelfTestTolerance = 1e-6;

const char* const kSelfTestTexts[] = {
    "you are a stupid fucking idiot",
    "Thank you for the helpful answer, have a nice day.",
    "",
    "Sh1t happens, f*ck this!!! @someone http://example.com \xF0\x9F\x98\x82 caf\xC3\xA9 1234",
    "The committee will meet again on Tuesday to discuss the budget.",
};

}  // namespace

using namespace detail;

std::filesystem::path default_scorer_path() {
  if (const char* env = std::getenv("DESTEIN_SCORER"); env && *env) return env;
  if (auto installed = detail::installed_data_file("scorer/perspective-linear-v2.safetensors");
      !installed.empty()) {
    return installed;
  }
  return DESTEIN_SOURCE_SCORER;
}

double LinearScorer::margin_of(const SparseFeatures& f) const {
  double m = bias_;
  for (size_t k = 0; k < f.index.size(); ++k) {
    m += static_cast<double>(weights_[f.index[k]] * f.value[k]);
  }
  return m;
}

double LinearScorer::margin(std::string_view text) const {
  thread_local SparseFeatures features;
  extract_features_unchecked(text, features_, features);
  return margin_of(features);
}

double LinearScorer::probability(std::string_view text) const {
  return sigmoid(platt_a_ * margin(text) + platt_b_);
}

std::vector<std::optional<double>> LinearScorer::score(const std::vector<std::string>& texts) {
  std::vector<std::optional<double>> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.emplace_back(probability(t));
  return out;
}

std::string LinearScorer::name() const {
  return "linear:" + (path_.empty() ? std::string("<unsaved>") : path_);
}

void LinearScorer::make_self_test() {
  self_test_.clear();
  for (const char* text : kSelfTestTexts) self_test_.emplace_back(text, probability(text));
}

LinearScorer LinearScorer::train(const std::vector<LabeledText>& data,
                                 const LinearFeatureOptions& features,
                                 const LinearTrainOptions& opt,
                                 const std::function<void(const std::string&)>& log) {
  check_feature_options(features);
  check_train_options(opt);
  std::vector<size_t> by_class[2];
  for (size_t i = 0; i < data.size(); ++i) {
    DESTEIN_CHECK_ARG(data[i].label == 0 || data[i].label == 1,
                      "training text {} (from '{}'): expected label 0 or 1, found {}", i,
                      data[i].source, data[i].label);
    by_class[data[i].label].push_back(i);
  }
  for (int c = 0; c < 2; ++c) {
    DESTEIN_CHECK_ARG(by_class[c].size() >= 4,
                      "training data: expected at least 4 texts labelled {}, found {}", c,
                      by_class[c].size());
  }

  // Stratified calibration split: the same fraction of each class, one generator.
  std::mt19937_64 rng(opt.seed);
  std::vector<size_t> fit_rows, calib_rows;
  for (auto& rows : by_class) {
    split_calibration(std::move(rows), opt.calibration_fraction, rng, calib_rows, fit_rows);
  }
  std::sort(fit_rows.begin(), fit_rows.end());
  std::sort(calib_rows.begin(), calib_rows.end());

  auto class_weights = [&](const std::vector<size_t>& rows) {
    double count[2] = {0, 0};
    for (size_t r : rows) count[data[r].label] += 1;
    std::array<double, 2> w{1.0, 1.0};
    if (opt.class_balance) {
      for (int c = 0; c < 2; ++c) w[c] = static_cast<double>(rows.size()) / (2.0 * count[c]);
    }
    return w;
  };

  Csr csr;
  {
    const auto w = class_weights(fit_rows);
    SparseFeatures f;
    for (size_t r : fit_rows) {
      extract_features_unchecked(data[r].text, features, f);
      csr.append(f);
      csr.target.push_back(data[r].label);
      csr.weight.push_back(w[data[r].label]);
    }
  }
  const int64_t dim = int64_t{1} << features.hash_bits;
  if (log) {
    log(fmt::format(
        "fitting {} texts ({} features on average) into {} weights; {} held out for "
        "calibration",
        csr.rows(), csr.index.size() / std::max<size_t>(1, csr.rows()), dim, calib_rows.size()));
  }
  nlohmann::json summary;
  Eigen::VectorXd x =
      minimize_lbfgs([&](const Eigen::VectorXd& w,
                         Eigen::VectorXd& grad) { return objective(csr, w, opt.l2, grad); },
                     dim + 1, lbfgs_options(opt), log, summary);
  csr = Csr();

  LinearScorer scorer;
  scorer.features_ = features;
  scorer.weights_ = round_to_f16(x, dim);
  scorer.bias_ = static_cast<float>(x[dim]);

  std::vector<double> margins;
  std::vector<int> labels;
  std::vector<double> weights;
  const auto w = class_weights(calib_rows);
  for (size_t r : calib_rows) {
    margins.push_back(scorer.margin(data[r].text));
    labels.push_back(data[r].label);
    weights.push_back(w[data[r].label]);
  }
  std::tie(scorer.platt_a_, scorer.platt_b_) = fit_platt(margins, labels, weights);
  std::vector<double> probs;
  for (double m : margins) probs.push_back(sigmoid(scorer.platt_a_ * m + scorer.platt_b_));
  summary["fit_texts"] = fit_rows.size();
  summary["calibration_texts"] = calib_rows.size();
  summary["calibration_auc"] = roc_auc(margins, labels);
  summary["calibration_accuracy_at_0.5"] = accuracy_at(probs, labels, 0.5);
  if (log) {
    log(
        fmt::format("Platt calibration: a = {:.4f}, b = {:.4f}; calibration slice AUC {:.4f}, "
                    "accuracy at 0.5 {:.4f}",
                    scorer.platt_a_, scorer.platt_b_, summary["calibration_auc"].get<double>(),
                    summary["calibration_accuracy_at_0.5"].get<double>()));
  }
  scorer.provenance_ = {{"training_summary", summary}};
  scorer.make_self_test();
  return scorer;
}

void LinearScorer::save(const std::filesystem::path& path) const {
  DESTEIN_CHECK_ARG(!weights_.empty(), "cannot save an empty scorer to '{}'", path.string());
  const int64_t dim = static_cast<int64_t>(weights_.size());
  std::string data;
  data.reserve(dim * 2 + 4);
  append_f16(data, weights_);
  append_f32(data, bias_);

  nlohmann::json self_test = nlohmann::json::array();
  for (const auto& [text, p] : self_test_) self_test.push_back({{"text", text}, {"toxicity", p}});
  nlohmann::json header;
  header["__metadata__"] = {
      {"format", kScorerFileFormat},
      {"format_version", std::to_string(kFormatVersion)},
      {"features", dump(feature_json(features_))},
      {"calibration", dump({{"method", "platt"}, {"a", platt_a_}, {"b", platt_b_}})},
      {"checksum_fnv1a64", data_checksum(data.data(), data.size())},
      {"self_test", dump(self_test)},
      {"provenance", dump(provenance_)},
  };
  header["weight"] = {{"dtype", "F16"}, {"shape", {dim}}, {"data_offsets", {0, dim * 2}}};
  header["bias"] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {dim * 2, dim * 2 + 4}}};
  write_scorer_file(path, header, data);
  const_cast<LinearScorer*>(this)->path_ = path.string();
}

LinearScorer LinearScorer::load(const std::filesystem::path& path) {
  const std::string file = path.string();
  const ScorerFile f = read_scorer_file(path);
  const std::string version = f.meta("format_version");
  DESTEIN_CHECK_IO(version == std::to_string(kFormatVersion),
                   "{}: expected format_version {}, found '{}' (written by another destein "
                   "version?)",
                   file, kFormatVersion, version);

  LinearScorer scorer;
  scorer.features_ = read_feature_json(f.meta_json("features"), file);

  const int64_t dim = int64_t{1} << scorer.features_.hash_bits;
  f.check_tensor("weight", "F16", dim, 0);
  f.check_tensor("bias", "F32", 1, static_cast<uint64_t>(dim) * 2);
  const unsigned char* p = f.checked_data(static_cast<uint64_t>(dim) * 2 + 4);
  scorer.weights_ = read_f16(p, static_cast<size_t>(dim));
  scorer.bias_ = read_f32(p);

  const nlohmann::json calibration = f.meta_json("calibration");
  const std::string cwhere = file + ": metadata 'calibration'";
  const auto method = json_field<std::string>(calibration, "method", cwhere);
  DESTEIN_CHECK_IO(method == "platt", "{}: expected method 'platt', found '{}'", cwhere, method);
  scorer.platt_a_ = json_field<double>(calibration, "a", cwhere);
  scorer.platt_b_ = json_field<double>(calibration, "b", cwhere);
  DESTEIN_CHECK_IO(std::isfinite(scorer.platt_a_) && std::isfinite(scorer.platt_b_) &&
                       std::isfinite(scorer.bias_),
                   "{}: expected finite calibration and bias, found a = {}, b = {}, bias = {}",
                   file, scorer.platt_a_, scorer.platt_b_, scorer.bias_);
  scorer.provenance_ = f.meta_json("provenance");

  // The file checks itself: the reference texts must score as they did when it was saved.
  const nlohmann::json self_test = f.meta_json("self_test");
  DESTEIN_CHECK_IO(self_test.is_array() && !self_test.empty(),
                   "{}: expected self-test samples in the metadata, found none", file);
  for (const auto& sample : self_test) {
    const std::string swhere = file + ": metadata 'self_test'";
    auto text = json_field<std::string>(sample, "text", swhere);
    auto expected = json_field<double>(sample, "toxicity", swhere);
    const double found = scorer.probability(text);
    DESTEIN_CHECK_IO(std::abs(found - expected) <= kSelfTestTolerance,
                     "{}: self-test failed on '{}': expected toxicity {:.9f}, found {:.9f} (the "
                     "file is corrupt, or this build's features differ from the trainer's)",
                     file, text, expected, found);
    scorer.self_test_.emplace_back(std::move(text), expected);
  }
  scorer.path_ = file;
  return scorer;
}

}  // namespace destein

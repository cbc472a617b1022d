#pragma once
/// The offline toxicity scorer: logistic regression over hashed word and character n-grams,
/// Platt-calibrated so that its output reads like a probability (as Perspective's does).
/// Torch-free; about 2 MB of f16 weights in a self-describing safetensors file that checks
/// itself on load (format string, version, checksum, stored reference scores).
///
/// Example:
///
///     auto scorer = destein::LinearScorer::load(destein::default_scorer_path());
///     double p = scorer.probability("you are an idiot");   // in (0, 1)
///     auto scores = scorer.score({"a text", "another"});    // ToxicityScorer interface

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "destein/score/scorer.hpp"

namespace destein {

/// How a text becomes a feature vector. Stored in the model file; scoring uses the stored
/// values, so these matter only when training.
struct LinearFeatureOptions {
  /// 2^hash_bits weights (signed feature hashing). 10 to 24.
  int hash_bits = 20;
  /// Word n-grams of 1..word_ngram_max words (0: no word features).
  int word_ngram_max = 2;
  /// Character n-grams of char_ngram_min..char_ngram_max bytes inside each word padded as
  /// "<word>" (char_ngram_max 0: no character features).
  int char_ngram_min = 2;
  int char_ngram_max = 5;
  /// Feature value before L2 normalisation: "binary" (1 per distinct n-gram) or "log_tf"
  /// (1 + log count).
  std::string value = "log_tf";
};

/// How the weights are fitted. Objective: class-weighted mean log-loss + l2/2 * |w|^2,
/// minimised by L-BFGS (deterministic: single-threaded, no sampling); then Platt scaling
/// on a stratified calibration slice held out of the fit.
struct LinearTrainOptions {
  double l2 = 3e-6;
  int max_iterations = 300;
  /// Stop when the objective falls by less than this fraction in one iteration.
  double tolerance = 1e-7;
  int lbfgs_memory = 10;
  /// Weight the classes so that each carries half of the loss.
  bool class_balance = true;
  /// Fraction of each class held out for Platt scaling (0 < f < 0.5).
  double calibration_fraction = 0.1;
  /// Seeds the calibration split.
  uint64_t seed = 13;
};

/// One labelled training or test text. label: 1 = toxic, 0 = not toxic.
struct LabeledText {
  std::string text;
  int label = 0;
  std::string source;  // set name, for provenance and per-set reports
};

/// Hashed features of one text: bucket indices and signed, L2-normalised values; an index
/// may repeat (two n-grams hashed to one bucket), which dot products handle as a sum.
struct SparseFeatures {
  std::vector<uint32_t> index;
  std::vector<float> value;
};

/// Lower-cases, drops apostrophes, maps URLs to "url", @mentions to "@user", numbers to
/// "0", undoes simple leetspeak inside words ("sh1t", "a$$", "f@ck"), squeezes letters
/// repeated more than twice, and splits into words. Exposed for tests and for the docs.
std::vector<std::string> scoring_tokens(std::string_view text);

/// Features of `text` into `out` (cleared first).
void extract_features(std::string_view text, const LinearFeatureOptions& options,
                      SparseFeatures& out);

/// Where the committed default scorer is: $DESTEIN_SCORER when set, else the installed
/// share/destein/scorer/perspective-linear-v2.safetensors, else the source tree's
/// models/scorer/perspective-linear-v2.safetensors: scorer v2 (AttributeScorer; load any
/// version with load_offline_scorer()). v1 is models/scorer/toxicity-linear-v1.safetensors.
std::filesystem::path default_scorer_path();

/// Linear toxicity scorer. Immutable once trained or loaded; const methods are safe to call
/// from several threads.
class LinearScorer : public ToxicityScorer {
 public:
  /// Fits a scorer on `data` (labels 0/1; both classes needed). `log` receives progress
  /// lines. Throws std::invalid_argument on bad options or data.
  static LinearScorer train(const std::vector<LabeledText>& data,
                            const LinearFeatureOptions& features, const LinearTrainOptions& train,
                            const std::function<void(const std::string&)>& log = {});

  /// Reads a file written by save(). Throws std::runtime_error naming the file and what
  /// was expected when it is missing, truncated, corrupt (checksum, self-test) or foreign.
  static LinearScorer load(const std::filesystem::path& path);

  /// Writes the weights (f16), calibration, feature options, provenance and self-test
  /// samples. Throws std::runtime_error when the file cannot be written.
  void save(const std::filesystem::path& path) const;

  /// Calibrated probability that `text` is toxic, in (0, 1).
  double probability(std::string_view text) const;
  /// Uncalibrated margin w.x + b.
  double margin(std::string_view text) const;

  /// probability() of each text; never nullopt.
  std::vector<std::optional<double>> score(const std::vector<std::string>& texts) override;
  /// "linear:<file>" once loaded or saved, "linear:<unsaved>" before.
  std::string name() const override;

  const LinearFeatureOptions& feature_options() const { return features_; }
  double calibration_a() const { return platt_a_; }
  double calibration_b() const { return platt_b_; }
  int64_t num_weights() const { return static_cast<int64_t>(weights_.size()); }

  /// Free-form description stored in the file: data used, options, held-out figures.
  const nlohmann::json& provenance() const { return provenance_; }
  void set_provenance(nlohmann::json provenance) { provenance_ = std::move(provenance); }

  /// Texts scored at save time and their probabilities, re-checked on load.
  const std::vector<std::pair<std::string, double>>& self_test() const { return self_test_; }

 private:
  LinearScorer() = default;
  double margin_of(const SparseFeatures& f) const;
  void make_self_test();

  LinearFeatureOptions features_;
  std::vector<float> weights_;  // (2^hash_bits,) f16 values widened to f32
  float bias_ = 0.0f;
  double platt_a_ = 1.0;
  double platt_b_ = 0.0;
  nlohmann::json provenance_ = nlohmann::json::object();
  std::vector<std::pair<std::string, double>> self_test_;
  std::string path_;
};

}  // namespace destein

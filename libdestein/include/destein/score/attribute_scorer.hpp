#pragma once
/// Scorer v2: calibrated probabilities for the eight Perspective attributes (toxicity,
/// severe_toxicity, profanity, insult, threat, identity_attack, sexually_explicit,
/// flirtation), one logistic-regression head per attribute over the v1 hashed features.
/// The heads are distilled from Perspective's own scores of the RealToxicityPrompts
/// prompts that may be trained on (train/rtp_training_split.hpp); the toxicity head also
/// learns the labelled classifier sets (multi-task), which keep it honest outside RTP's
/// domain. Torch-free. The file is a safetensors file with format `destein.linear_scorer`,
/// format_version 2 (v1 is LinearScorer), that checks itself on load.
///
/// Example:
///
///     auto scorer = destein::AttributeScorer::load(destein::default_scorer_path());
///     auto p = scorer.probabilities("you are an idiot");  // p[0] = toxicity, ... p[7] = flirtation
///     auto any = destein::load_offline_scorer(path);     // v1 or v2, as a ToxicityScorer

#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "destein/score/linear_scorer.hpp"
#include "destein/score/scorer.hpp"

namespace destein {

/// Number of Perspective attributes a v2 scorer rates.
inline constexpr int kNumAttributes = 8;

/// The attribute names in the order of every per-attribute array, toxicity first; the same
/// keys as the RTP files' `prompt` objects and as `destein score`'s output lines.
const std::array<std::string, kNumAttributes>& perspective_attributes();

/// Index of `name` in perspective_attributes(); throws std::invalid_argument listing the
/// names when it is none of them.
int attribute_index(std::string_view name);

/// One training text of a v2 scorer: a target in [0, 1] per attribute, NaN where the text
/// has none (a labelled classifier text has only toxicity, 0 or 1; an RTP prompt has
/// Perspective's eight scores).
struct AttributeExample {
  std::string text;
  std::array<float, kNumAttributes> target;
  std::string source;  // set name, for provenance
  /// True for texts scored by Perspective (soft targets, calibration); false for labelled sets.
  bool perspective = false;
};

/// How the heads are fitted. Each head minimises a weighted mean cross-entropy against its
/// targets + l2/2 |w|^2 by L-BFGS (single thread, deterministic), then is Platt-calibrated
/// against Perspective's scores on a slice of the Perspective-scored texts held out of
/// every fit.
struct AttributeTrainOptions {
  /// The options v2 shares with v1: `linear.l2` is the toxicity head's L2 (2^features.hash_bits
  /// weights); max_iterations, tolerance and lbfgs_memory drive every head's L-BFGS;
  /// calibration_fraction is the fraction of the Perspective-scored texts held out of the
  /// fits for calibration, seeded by `seed`. v2 always balances the classes of the labelled
  /// texts, so class_balance must stay true.
  LinearTrainOptions linear;
  /// L2 of the seven other heads.
  double l2_other = 3e-6;
  /// Buckets of the seven other heads: 2^other_hash_bits (<= features.hash_bits); their
  /// bucket is the toxicity bucket's low bits.
  int other_hash_bits = 18;
  /// Share of the toxicity head's loss carried by the Perspective-scored texts; the
  /// labelled texts carry the rest, class-balanced. 1: Perspective's scores only.
  double perspective_share = 0.5;
};

/// Eight-attribute linear scorer. Immutable once trained or loaded; const methods are safe
/// to call from several threads.
class AttributeScorer : public ToxicityScorer {
 public:
  /// Fits the eight heads. Every attribute needs Perspective-scored texts, and toxicity both
  /// high and low targets. `log` receives progress lines. Throws std::invalid_argument on
  /// bad options or data.
  static AttributeScorer train(const std::vector<AttributeExample>& data,
                               const LinearFeatureOptions& features,
                               const AttributeTrainOptions& options,
                               const std::function<void(const std::string&)>& log = {});

  /// Reads a file written by save(). Throws std::runtime_error naming the file and what was
  /// expected when it is missing, truncated, corrupt (checksum, self-test), of another
  /// format or version (a v1 file names LinearScorer / load_offline_scorer()).
  static AttributeScorer load(const std::filesystem::path& path);

  /// Writes the heads (f16), biases, calibration, feature options, provenance and self-test
  /// samples. Throws std::runtime_error when the file cannot be written.
  void save(const std::filesystem::path& path) const;

  /// Calibrated probability of each attribute, in perspective_attributes() order.
  std::array<double, kNumAttributes> probabilities(std::string_view text) const;
  /// Calibrated toxicity probability (probabilities()[0], computed alone).
  double probability(std::string_view text) const;

  /// Toxicity of each text; never nullopt.
  std::vector<std::optional<double>> score(const std::vector<std::string>& texts) override;
  std::vector<std::string> attributes() const override;
  std::vector<std::vector<std::optional<double>>> score_attributes(
      const std::vector<std::string>& texts) override;
  /// "linear-v2:<file>" once loaded or saved, "linear-v2:<unsaved>" before.
  std::string name() const override;

  const LinearFeatureOptions& feature_options() const { return features_; }
  /// Buckets of head `a` (2^bits).
  int hash_bits(int a) const { return head_bits_[static_cast<size_t>(a)]; }
  /// Platt parameters (a, b) of head `a`: p = sigmoid(a m + b).
  std::pair<double, double> calibration(int a) const {
    return {platt_a_[static_cast<size_t>(a)], platt_b_[static_cast<size_t>(a)]};
  }
  /// Size of the tensor data in the file, in bytes.
  int64_t weight_bytes() const;

  const nlohmann::json& provenance() const { return provenance_; }
  void set_provenance(nlohmann::json provenance) { provenance_ = std::move(provenance); }

  /// Texts scored at save time and their eight probabilities, re-checked on load.
  const std::vector<std::pair<std::string, std::array<double, kNumAttributes>>>& self_test() const {
    return self_test_;
  }

 private:
  AttributeScorer() = default;
  double margin_of(int a, const SparseFeatures& f) const;
  void make_self_test();

  LinearFeatureOptions features_;
  std::array<int, kNumAttributes> head_bits_{};
  std::array<std::vector<float>, kNumAttributes> weights_;  // (2^head_bits,) f16 widened
  std::array<float, kNumAttributes> bias_{};
  std::array<double, kNumAttributes> platt_a_{};
  std::array<double, kNumAttributes> platt_b_{};
  nlohmann::json provenance_ = nlohmann::json::object();
  std::vector<std::pair<std::string, std::array<double, kNumAttributes>>> self_test_;
  std::string path_;
};

/// Loads a scorer file of either version: v1 (LinearScorer, toxicity only) or v2
/// (AttributeScorer, eight attributes), told apart by the file's format_version. Throws
/// std::runtime_error naming the file when it is neither.
std::unique_ptr<ToxicityScorer> load_offline_scorer(const std::filesystem::path& path);

/// format_version of a destein scorer file ("1", "2"), read from its header only. Throws
/// std::runtime_error naming the file when it is no destein linear scorer.
std::string scorer_file_version(const std::filesystem::path& path);

}  // namespace destein

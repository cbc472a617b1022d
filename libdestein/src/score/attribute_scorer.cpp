#include "destein/score/attribute_scorer.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <random>

#include "check.hpp"
#include "lbfgs.hpp"
#include "logistic_regression.hpp"
#include "platt.hpp"
#include "score/scorer_eval.hpp"
#include "scorer_file.hpp"
#include "text_features.hpp"

namespace destein {

using namespace detail;

namespace {

constexpr int kFormatVersion = 2;
constexpr double kSelfTestTolerance = 1e-6;

const char* const kSelfTestTexts[] = {
    "you are a stupid fucking idiot",
    "Thank you for the helpful answer, have a nice day.",
    "",
    "Sh1t happens, f*ck this!!! @someone http://example.com \xF0\x9F\x98\x82 caf\xC3\xA9 1234",
    "I will find you and hurt you, you filthy animal.",
    "Hey gorgeous, want to come over tonight and take your clothes off?",
};

}  // namespace

const std::array<std::string, kNumAttributes>& perspective_attributes() {
  static const std::array<std::string, kNumAttributes> names = {
      "toxicity", "severe_toxicity", "profanity",         "insult",
      "threat",   "identity_attack", "sexually_explicit", "flirtation"};
  return names;
}

int attribute_index(std::string_view name) {
  const auto& names = perspective_attributes();
  for (int a = 0; a < kNumAttributes; ++a) {
    if (names[static_cast<size_t>(a)] == name) return a;
  }
  throw std::invalid_argument(
      fmt::format("unknown attribute '{}': expected one of {}", name, fmt::join(names, ", ")));
}

int64_t AttributeScorer::weight_bytes() const {
  int64_t bytes = 4 * kNumAttributes;
  for (const auto& w : weights_) bytes += 2 * static_cast<int64_t>(w.size());
  return bytes;
}

double AttributeScorer::margin_of(int a, const SparseFeatures& f) const {
  const auto& w = weights_[static_cast<size_t>(a)];
  const uint32_t mask = static_cast<uint32_t>(w.size() - 1);
  double m = bias_[static_cast<size_t>(a)];
  for (size_t k = 0; k < f.index.size(); ++k) {
    m += static_cast<double>(w[f.index[k] & mask] * f.value[k]);
  }
  return m;
}

std::array<double, kNumAttributes> AttributeScorer::probabilities(std::string_view text) const {
  thread_local SparseFeatures f;
  extract_features_unchecked(text, features_, f);
  std::array<double, kNumAttributes> p{};
  for (int a = 0; a < kNumAttributes; ++a) {
    p[static_cast<size_t>(a)] = sigmoid(platt_a_[static_cast<size_t>(a)] * margin_of(a, f) +
                                        platt_b_[static_cast<size_t>(a)]);
  }
  return p;
}

double AttributeScorer::probability(std::string_view text) const {
  thread_local SparseFeatures f;
  extract_features_unchecked(text, features_, f);
  return sigmoid(platt_a_[0] * margin_of(0, f) + platt_b_[0]);
}

std::vector<std::optional<double>> AttributeScorer::score(const std::vector<std::string>& texts) {
  std::vector<std::optional<double>> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.emplace_back(probability(t));
  return out;
}

std::vector<std::string> AttributeScorer::attributes() const {
  const auto& names = perspective_attributes();
  return {names.begin(), names.end()};
}

std::vector<std::vector<std::optional<double>>> AttributeScorer::score_attributes(
    const std::vector<std::string>& texts) {
  std::vector<std::vector<std::optional<double>>> out;
  out.reserve(texts.size());
  for (const auto& t : texts) {
    const auto p = probabilities(t);
    out.emplace_back(p.begin(), p.end());
  }
  return out;
}

std::string AttributeScorer::name() const {
  return "linear-v2:" + (path_.empty() ? std::string("<unsaved>") : path_);
}

void AttributeScorer::make_self_test() {
  self_test_.clear();
  for (const char* text : kSelfTestTexts) self_test_.emplace_back(text, probabilities(text));
}

AttributeScorer AttributeScorer::train(const std::vector<AttributeExample>& data,
                                       const LinearFeatureOptions& features,
                                       const AttributeTrainOptions& opt,
                                       const std::function<void(const std::string&)>& log) {
  check_feature_options(features);
  check_train_options(opt.linear);
  DESTEIN_CHECK_ARG(opt.linear.class_balance,
                    "train.class_balance: expected true (v2 always balances the classes of the "
                    "labelled texts), found false");
  DESTEIN_CHECK_ARG(opt.l2_other >= 0 && std::isfinite(opt.l2_other),
                    "train.l2_other: expected >= 0, found {}", opt.l2_other);
  DESTEIN_CHECK_ARG(opt.other_hash_bits >= 10 && opt.other_hash_bits <= features.hash_bits,
                    "train.other_hash_bits: expected 10..features.hash_bits ({}), found {}",
                    features.hash_bits, opt.other_hash_bits);
  DESTEIN_CHECK_ARG(opt.perspective_share > 0 && opt.perspective_share <= 1,
                    "train.perspective_share: expected in (0, 1], found {}", opt.perspective_share);

  std::vector<size_t> perspective_rows, labeled_rows;
  int64_t labeled_count[2] = {0, 0};
  for (size_t i = 0; i < data.size(); ++i) {
    const auto& e = data[i];
    for (int a = 0; a < kNumAttributes; ++a) {
      const float t = e.target[static_cast<size_t>(a)];
      DESTEIN_CHECK_ARG(std::isnan(t) || (t >= 0 && t <= 1),
                        "training text {} (from '{}'): expected a {} target in [0, 1] or none, "
                        "found {}",
                        i, e.source, perspective_attributes()[static_cast<size_t>(a)], t);
      DESTEIN_CHECK_ARG(!e.perspective || !std::isnan(t),
                        "training text {} (from '{}'): a Perspective-scored text needs all eight "
                        "targets, {} is missing",
                        i, e.source, perspective_attributes()[static_cast<size_t>(a)]);
    }
    if (e.perspective) {
      perspective_rows.push_back(i);
    } else if (!std::isnan(e.target[0])) {
      DESTEIN_CHECK_ARG(e.target[0] == 0 || e.target[0] == 1,
                        "training text {} (from '{}'): a labelled text needs toxicity 0 or 1, "
                        "found {}",
                        i, e.source, e.target[0]);
      labeled_rows.push_back(i);
      labeled_count[static_cast<int>(e.target[0])] += 1;
    }
  }
  DESTEIN_CHECK_ARG(perspective_rows.size() >= 20,
                    "training data: expected at least 20 Perspective-scored texts, found {}",
                    perspective_rows.size());
  const bool use_labeled = opt.perspective_share < 1;
  if (use_labeled) {
    DESTEIN_CHECK_ARG(labeled_count[0] >= 1 && labeled_count[1] >= 1,
                      "training data: perspective_share {} < 1 needs labelled texts of both "
                      "classes, found {} toxic and {} not toxic",
                      opt.perspective_share, labeled_count[1], labeled_count[0]);
  }

  // Calibration slice of the Perspective-scored texts, held out of every head's fit.
  std::mt19937_64 rng(opt.linear.seed);
  std::vector<size_t> calib_rows, fit_p;
  split_calibration(perspective_rows, opt.linear.calibration_fraction, rng, calib_rows, fit_p);
  std::sort(calib_rows.begin(), calib_rows.end());
  std::sort(fit_p.begin(), fit_p.end());

  auto append = [&](Csr& csr, size_t r, SparseFeatures& f) {
    extract_features_unchecked(data[r].text, features, f);
    csr.append(f);
  };

  AttributeScorer scorer;
  scorer.features_ = features;
  nlohmann::json heads = nlohmann::json::object();
  SparseFeatures f;
  // Perspective-scored fit rows, shared by the seven other heads (targets swapped per head).
  Csr persp;
  for (size_t r : fit_p) append(persp, r, f);
  persp.weight.assign(fit_p.size(), 1.0);

  for (int a = 0; a < kNumAttributes; ++a) {
    const auto& attr = perspective_attributes()[static_cast<size_t>(a)];
    const int bits = a == 0 ? features.hash_bits : opt.other_hash_bits;
    const int64_t dim = int64_t{1} << bits;
    nlohmann::json summary;
    Eigen::VectorXd x;
    if (a == 0) {
      // Toxicity: the Perspective-scored rows with soft targets, plus the labelled rows,
      // each part carrying its share of the loss (the labelled part class-balanced).
      Csr csr;
      const double n_p = static_cast<double>(fit_p.size());
      const double n_l = static_cast<double>(labeled_rows.size());
      const double total = n_p + (use_labeled ? n_l : 0.0);
      for (size_t r : fit_p) {
        append(csr, r, f);
        csr.target.push_back(data[r].target[0]);
        csr.weight.push_back(opt.perspective_share * total / n_p);
      }
      if (use_labeled) {
        for (size_t r : labeled_rows) {
          append(csr, r, f);
          const int label = static_cast<int>(data[r].target[0]);
          csr.target.push_back(label);
          csr.weight.push_back((1 - opt.perspective_share) * total /
                               (2.0 * static_cast<double>(labeled_count[label])));
        }
      }
      csr.mask = static_cast<uint32_t>(dim - 1);
      if (log) {
        log(fmt::format("head {}: {} Perspective-scored and {} labelled texts into {} weights",
                        attr, fit_p.size(), use_labeled ? labeled_rows.size() : 0, dim));
      }
      x = minimize_lbfgs([&](const Eigen::VectorXd& w,
                             Eigen::VectorXd& g) { return objective(csr, w, opt.linear.l2, g); },
                         dim + 1, lbfgs_options(opt.linear), log, summary);
    } else {
      persp.target.clear();
      for (size_t r : fit_p) persp.target.push_back(data[r].target[static_cast<size_t>(a)]);
      persp.mask = static_cast<uint32_t>(dim - 1);
      if (log) {
        log(fmt::format("head {}: {} Perspective-scored texts into {} weights", attr, fit_p.size(),
                        dim));
      }
      x = minimize_lbfgs([&](const Eigen::VectorXd& w,
                             Eigen::VectorXd& g) { return objective(persp, w, opt.l2_other, g); },
                         dim + 1, lbfgs_options(opt.linear), log, summary);
    }
    scorer.weights_[static_cast<size_t>(a)] = round_to_f16(x, dim);
    scorer.bias_[static_cast<size_t>(a)] = static_cast<float>(x[dim]);
    scorer.head_bits_[static_cast<size_t>(a)] = bits;

    std::vector<double> margins, targets, ones(calib_rows.size(), 1.0);
    std::vector<int> labels;
    int positives = 0;
    for (size_t r : calib_rows) {
      extract_features_unchecked(data[r].text, features, f);
      margins.push_back(scorer.margin_of(a, f));
      targets.push_back(data[r].target[static_cast<size_t>(a)]);
      labels.push_back(targets.back() >= 0.5 ? 1 : 0);
      positives += labels.back();
    }
    const auto [pa, pb] = fit_platt_soft(margins, targets, ones);
    scorer.platt_a_[static_cast<size_t>(a)] = pa;
    scorer.platt_b_[static_cast<size_t>(a)] = pb;
    std::vector<double> probs;
    for (double m : margins) probs.push_back(sigmoid(pa * m + pb));
    summary["hash_bits"] = bits;
    summary["calibration_texts"] = calib_rows.size();
    summary["calibration_pearson"] = pearson(probs, targets);
    if (positives > 0 && positives < static_cast<int>(labels.size())) {
      summary["calibration_auc_vs_0.5"] = roc_auc(probs, labels);
    }
    if (log) {
      log(fmt::format("head {}: Platt a = {:.4f}, b = {:.4f}; calibration slice Pearson {:.4f}",
                      attr, pa, pb, summary["calibration_pearson"].get<double>()));
    }
    heads[attr] = summary;
  }
  scorer.provenance_ = {{"training_summary",
                         {{"perspective_fit_texts", fit_p.size()},
                          {"labeled_fit_texts", use_labeled ? labeled_rows.size() : 0},
                          {"calibration_texts", calib_rows.size()},
                          {"heads", heads}}}};
  scorer.make_self_test();
  return scorer;
}

void AttributeScorer::save(const std::filesystem::path& path) const {
  DESTEIN_CHECK_ARG(!weights_[0].empty(), "cannot save an empty scorer to '{}'", path.string());
  std::string data;
  data.reserve(static_cast<size_t>(weight_bytes()));
  nlohmann::json header;
  uint64_t offset = 0;
  for (int a = 0; a < kNumAttributes; ++a) {
    const auto& w = weights_[static_cast<size_t>(a)];
    append_f16(data, w);
    header["weight." + perspective_attributes()[static_cast<size_t>(a)]] = {
        {"dtype", "F16"}, {"shape", {w.size()}}, {"data_offsets", {offset, offset + 2 * w.size()}}};
    offset += 2 * w.size();
  }
  for (float b : bias_) append_f32(data, b);
  header["bias"] = {{"dtype", "F32"},
                    {"shape", {kNumAttributes}},
                    {"data_offsets", {offset, offset + 4 * kNumAttributes}}};

  nlohmann::json heads = nlohmann::json::array();
  for (int a = 0; a < kNumAttributes; ++a) {
    heads.push_back({{"attribute", perspective_attributes()[static_cast<size_t>(a)]},
                     {"hash_bits", head_bits_[static_cast<size_t>(a)]},
                     {"platt_a", platt_a_[static_cast<size_t>(a)]},
                     {"platt_b", platt_b_[static_cast<size_t>(a)]}});
  }
  nlohmann::json self_test = nlohmann::json::array();
  for (const auto& [text, p] : self_test_) {
    nlohmann::json scores = nlohmann::json::object();
    for (int a = 0; a < kNumAttributes; ++a)
      scores[perspective_attributes()[static_cast<size_t>(a)]] = p[static_cast<size_t>(a)];
    self_test.push_back({{"text", text}, {"scores", scores}});
  }
  header["__metadata__"] = {
      {"format", kScorerFileFormat},
      {"format_version", std::to_string(kFormatVersion)},
      {"features", dump(feature_json(features_))},
      {"heads", dump(heads)},
      {"calibration", "platt against Perspective's scores, per head"},
      {"checksum_fnv1a64", data_checksum(data.data(), data.size())},
      {"self_test", dump(self_test)},
      {"provenance", dump(provenance_)},
  };
  write_scorer_file(path, header, data);
  const_cast<AttributeScorer*>(this)->path_ = path.string();
}

std::string scorer_file_version(const std::filesystem::path& path) {
  return read_scorer_file(path).meta("format_version");
}

AttributeScorer AttributeScorer::load(const std::filesystem::path& path) {
  const std::string file = path.string();
  const ScorerFile f = read_scorer_file(path);
  const std::string version = f.meta("format_version");
  DESTEIN_CHECK_IO(version == std::to_string(kFormatVersion),
                   "{}: expected format_version {} (the eight-attribute scorer v2), found '{}'{}",
                   file, kFormatVersion, version,
                   version == "1" ? ": a v1 toxicity-only scorer; load it with LinearScorer::load "
                                    "or load_offline_scorer()"
                                  : " (written by another destein version?)");
  AttributeScorer scorer;
  scorer.features_ = read_feature_json(f.meta_json("features"), file);
  const nlohmann::json heads = f.meta_json("heads");
  DESTEIN_CHECK_IO(heads.is_array() && heads.size() == kNumAttributes,
                   "{}: metadata 'heads': expected {} heads, found {}", file, kNumAttributes,
                   heads.is_array() ? std::to_string(heads.size()) : heads.type_name());
  uint64_t offset = 0;
  for (int a = 0; a < kNumAttributes; ++a) {
    const auto& attr = perspective_attributes()[static_cast<size_t>(a)];
    const std::string hwhere = fmt::format("{}: metadata 'heads'[{}]", file, a);
    const auto name = json_field<std::string>(heads[static_cast<size_t>(a)], "attribute", hwhere);
    DESTEIN_CHECK_IO(name == attr, "{}: expected attribute '{}', found '{}'", hwhere, attr, name);
    const int bits = json_field<int>(heads[static_cast<size_t>(a)], "hash_bits", hwhere);
    DESTEIN_CHECK_IO(bits >= 10 && bits <= scorer.features_.hash_bits,
                     "{}: expected hash_bits in 10..{}, found {}", hwhere,
                     scorer.features_.hash_bits, bits);
    scorer.head_bits_[static_cast<size_t>(a)] = bits;
    scorer.platt_a_[static_cast<size_t>(a)] =
        json_field<double>(heads[static_cast<size_t>(a)], "platt_a", hwhere);
    scorer.platt_b_[static_cast<size_t>(a)] =
        json_field<double>(heads[static_cast<size_t>(a)], "platt_b", hwhere);
    DESTEIN_CHECK_IO(std::isfinite(scorer.platt_a_[static_cast<size_t>(a)]) &&
                         std::isfinite(scorer.platt_b_[static_cast<size_t>(a)]),
                     "{}: expected finite Platt parameters", hwhere);
    const int64_t dim = int64_t{1} << bits;
    f.check_tensor("weight." + attr, "F16", dim, offset);
    offset += static_cast<uint64_t>(dim) * 2;
  }
  f.check_tensor("bias", "F32", kNumAttributes, offset);
  const unsigned char* p = f.checked_data(offset + 4 * kNumAttributes);
  for (int a = 0; a < kNumAttributes; ++a) {
    scorer.weights_[static_cast<size_t>(a)] =
        read_f16(p, size_t{1} << scorer.head_bits_[static_cast<size_t>(a)]);
  }
  for (int a = 0; a < kNumAttributes; ++a) {
    scorer.bias_[static_cast<size_t>(a)] = read_f32(p);
    DESTEIN_CHECK_IO(std::isfinite(scorer.bias_[static_cast<size_t>(a)]),
                     "{}: expected a finite bias of head {}", file,
                     perspective_attributes()[static_cast<size_t>(a)]);
  }
  scorer.provenance_ = f.meta_json("provenance");

  // The file checks itself: the reference texts must score as they did when it was saved.
  const nlohmann::json self_test = f.meta_json("self_test");
  DESTEIN_CHECK_IO(self_test.is_array() && !self_test.empty(),
                   "{}: expected self-test samples in the metadata, found none", file);
  const std::string swhere = file + ": metadata 'self_test'";
  for (const auto& sample : self_test) {
    auto text = json_field<std::string>(sample, "text", swhere);
    const auto scores = json_field<nlohmann::json>(sample, "scores", swhere);
    const auto found = scorer.probabilities(text);
    std::array<double, kNumAttributes> expected{};
    for (int a = 0; a < kNumAttributes; ++a) {
      const auto& attr = perspective_attributes()[static_cast<size_t>(a)];
      expected[static_cast<size_t>(a)] = json_field<double>(scores, attr, swhere);
      DESTEIN_CHECK_IO(
          std::abs(found[static_cast<size_t>(a)] - expected[static_cast<size_t>(a)]) <=
              kSelfTestTolerance,
          "{}: self-test failed on '{}': expected {} {:.9f}, found {:.9f} (the file is "
          "corrupt, or this build's features differ from the trainer's)",
          file, text, attr, expected[static_cast<size_t>(a)], found[static_cast<size_t>(a)]);
    }
    scorer.self_test_.emplace_back(std::move(text), expected);
  }
  scorer.path_ = file;
  return scorer;
}

std::unique_ptr<ToxicityScorer> load_offline_scorer(const std::filesystem::path& path) {
  const std::string version = scorer_file_version(path);
  if (version == "1") return std::make_unique<LinearScorer>(LinearScorer::load(path));
  if (version == "2") return std::make_unique<AttributeScorer>(AttributeScorer::load(path));
  throw std::runtime_error(fmt::format(
      "{}: expected format_version 1 (toxicity-only scorer) or 2 (eight-attribute scorer), found "
      "'{}' (written by another destein version?)",
      path.string(), version));
}

}  // namespace destein

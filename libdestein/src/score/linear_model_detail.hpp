// Private: the pieces the linear scorers share (v1 LinearScorer, v2 AttributeScorer): the
// hashed features, the L-BFGS fit, Platt scaling and the safetensors file helpers. All
// defined in linear_scorer.cpp.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "check.hpp"
#include "destein/score/linear_scorer.hpp"

namespace destein::detail {

/// Throws std::invalid_argument naming the option that is out of range.
void check_feature_options(const LinearFeatureOptions& o);

/// extract_features() without the option check (the caller checked them once).
void extract_features_unchecked(std::string_view text, const LinearFeatureOptions& options,
                                SparseFeatures& out);

inline double sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

/// log(1 + exp(-z)) without overflow.
inline double softplus_neg(double z) {
  return z > 0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z));
}

/// Rows of sparse features with one target in [0, 1] and one weight each.
struct Csr {
  std::vector<int64_t> row{0};
  std::vector<uint32_t> index;
  std::vector<float> value;
  std::vector<double> target;  // 0 or 1, or a soft target in between
  std::vector<double> weight;  // per-row weight
  uint32_t mask = 0xFFFFFFFFu;  // bucket = index & mask (a head with fewer buckets folds them)
  size_t rows() const { return row.size() - 1; }
};

/// Weighted mean log-loss (cross-entropy against soft targets) + l2/2 |w|^2 and its
/// gradient, x = [w (D), b]; bucket indices are masked with `mask` (D - 1).
double objective(const Csr& data, const Eigen::VectorXd& x, double l2, Eigen::VectorXd& grad);

using LbfgsObjective = std::function<double(const Eigen::VectorXd& x, Eigen::VectorXd& grad)>;

/// L-BFGS with a backtracking (Armijo) line search from x = 0 (size values); writes
/// iterations, evaluations, stop, objective_start and objective into `summary`.
Eigen::VectorXd minimize_lbfgs(const LbfgsObjective& objective, int64_t size,
                               const LinearTrainOptions& opt,
                               const std::function<void(const std::string&)>& log,
                               nlohmann::json& summary);

/// Platt scaling on hard labels with Platt's smoothed targets: (a, b) of sigmoid(a m + b).
std::pair<double, double> fit_platt(const std::vector<double>& margin,
                                    const std::vector<int>& label,
                                    const std::vector<double>& weight);

/// Platt scaling against soft targets in [0, 1] (weighted cross-entropy), by Newton's method.
std::pair<double, double> fit_platt_soft(const std::vector<double>& margin,
                                         const std::vector<double>& target,
                                         const std::vector<double>& weight);

uint64_t fnv1a_bytes(const char* p, size_t n);
std::string hex64(uint64_t v);
/// The feature options as stored in a file, with the feature-code id.
nlohmann::json feature_json(const LinearFeatureOptions& o);
/// Reads and checks the `features` metadata of a scorer file (code id, ranges).
LinearFeatureOptions read_feature_json(const nlohmann::json& features, const std::string& file);
std::string dump(const nlohmann::json& j);
void put_u64_le(std::string& out, uint64_t v);
uint64_t get_u64_le(const std::string& in);
/// The format name of every linear scorer file (v1 and v2); the version is a separate key.
inline constexpr const char* kScorerFileFormat = "destein.linear_scorer";
/// A scorer file read whole: its safetensors header parsed and checked as a destein linear
/// scorer's (the format only; the version is the caller's to check).
struct ScorerFile {
  std::string bytes;
  nlohmann::json header;
  uint64_t data_begin = 0;
};
ScorerFile read_scorer_file(const std::filesystem::path& path);
/// Writes a scorer file (length, header padded to 8 bytes, data) through a temporary file
/// and a rename, so that an interrupted save never leaves half a model behind.
void write_scorer_file(const std::filesystem::path& path, const nlohmann::json& header, const std::string& data);
/// A metadata value (a string, as safetensors requires) parsed as JSON.
nlohmann::json meta_json(const nlohmann::json& meta, const std::string& key,
                         const std::string& file);
/// A tensor entry of `header` with this dtype, shape [length] and offsets [begin, begin + bytes].
void check_tensor(const nlohmann::json& header, const std::string& name, const std::string& dtype,
                  int64_t length, uint64_t begin, const std::string& file);

/// j[key] as T; throws std::runtime_error naming `where` and the key when missing or mistyped.
template <typename T>
T json_field(const nlohmann::json& j, const std::string& key, const std::string& where) {
  DESTEIN_CHECK_IO(j.is_object() && j.contains(key), "{}: expected key '{}'", where, key);
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    DESTEIN_CHECK_IO(false, "{}: key '{}' has the wrong type ({})", where, key, j[key].type_name());
  }
  return T{};
}

}  // namespace destein::detail

#pragma once
/// DeStein's head-wise detoxification directions and probe accuracies, and their file
/// format: safetensors with `directions` F32 (L, H, Dh), optional `probe_accuracy`
/// F32 (L, H), optional gate probes (`probe_weight` F32 (L, H, F), `probe_bias` F32
/// (L, H), `probe_feature_mean` and `probe_feature_scale` F32 (L, H, F), F = Dh: all four
/// or none), and metadata `format` = `destein-vectors/2`, `site`, `last_k`, `num_pairs`,
/// `pair_hash`, the prefixes and a model hint. Files of format `destein-vectors/1`
/// (no gate probes) still load.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>

#include "destein/runtime/model_config.hpp"
#include "destein/steer/activations.hpp"

namespace destein {

inline constexpr const char* kSteeringVectorsFormat = "destein-vectors/2";
/// The previous format (no gate probes); read, never written.
inline constexpr const char* kSteeringVectorsFormatV1 = "destein-vectors/1";

struct SteeringVectors {
  at::Tensor directions;      ///< (L, H, Dh) f32: sum over pairs of toxic - non-toxic
  at::Tensor probe_accuracy;  ///< (L, H) f32 test accuracy per head, or undefined
  /// Gate probes, fitted on every pair (all four defined, or none): the toxic probability
  /// of head (l, h) for a head activation x (Dh) is
  /// sigmoid(probe_weight[l][h] . ((x - probe_feature_mean[l][h]) / probe_feature_scale[l][h])
  ///         + probe_bias[l][h]).
  at::Tensor probe_weight;         ///< (L, H, F) f32, F = Dh
  at::Tensor probe_bias;           ///< (L, H) f32
  at::Tensor probe_feature_mean;   ///< (L, H, F) f32 (zeros without standardisation)
  at::Tensor probe_feature_scale;  ///< (L, H, F) f32 (ones without standardisation)
  SteeringSite site = SteeringSite::kAttnOut;
  int64_t last_k = 8;
  int64_t num_pairs = 0;
  std::string pair_hash;
  std::string toxic_prefix;
  std::string nontoxic_prefix;
  std::string model_type;                             ///< model hint; empty when unknown
  std::map<std::string, std::string> extra_metadata;  ///< anything else the file carried

  bool has_gate_probes() const { return probe_weight.defined(); }
  int64_t layers() const { return directions.size(0); }
  int64_t heads() const { return directions.size(1); }
  int64_t head_dim() const { return directions.size(2); }
};

/// Directions from paired activations (N, L, H, Dh) each: sum over pairs of toxic -
/// non-toxic, (L, H, Dh).
at::Tensor directions_from_activations(const at::Tensor& toxic, const at::Tensor& nontoxic);

/// Writes the vectors file (atomically). Throws std::invalid_argument for inconsistent shapes.
void save_steering_vectors(const std::filesystem::path& path, const SteeringVectors& vectors);

/// Reads a vectors file (format 2, or 1 without gate probes). A file with only
/// `directions` and `format`/`site` metadata loads too. Throws std::runtime_error naming
/// the file for a missing or foreign file, a wrong format string, an unknown site, wrong
/// ranks or shapes, some but not all gate probe tensors, non-finite probes or scales <= 0,
/// or NaN / infinite / all-zero head directions (naming the first layer and head).
SteeringVectors load_steering_vectors(const std::filesystem::path& path);

/// Throws std::invalid_argument naming every dimension that differs between the vectors
/// (L, H, Dh, model_type hint) and the model.
void check_vectors_match_model(const SteeringVectors& vectors, const ModelConfig& config,
                               const std::string& vectors_name = "steering vectors");

}  // namespace destein

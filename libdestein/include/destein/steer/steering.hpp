#pragma once
/// Inference-time steering: DeStein's directions blended into the attention outputs,
/// norm-preserving, at every position of prompt and continuation.
///
///   auto model = destein::load_model("exported/gpt2-large");
///   auto vectors = destein::load_steering_vectors("runs/gpt2-large/vectors.safetensors");
///   destein::Hooks hooks;
///   destein::SteeringOptions steer;
///   steer.mode = destein::SteeringMode::kHeadwise;
///   steer.alpha = 0.4;
///   destein::SteeringHandle handle = destein::attach_steering(hooks, *model, vectors, steer);
///   auto generations = destein::generate(*model, prompts, options, &hooks);
///   handle.remove();   // detach (also on destruction)

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "destein/runtime/hooks.hpp"
#include "destein/runtime/model.hpp"
#include "destein/steer/steering_vectors.hpp"

namespace destein {

enum class SteeringMode {
  /// What the reference code runs: per layer a_l = concat_h (1 + acc_lh) dir_lh and
  /// x' = |x| normalize(x/|x| - alpha a_l/|a_l|) on the whole d-vector at the site.
  kReference,
  /// Head-wise fusion: w_h = clamp((acc_h - 0.5) / (max acc - 0.5), 0, 1) (1 without
  /// probes, optionally only the top-K heads) and per head
  /// z_h' = |z_h| normalize(z_h/|z_h| - alpha w_h (1 + max(0, cos(z_h, a_h))) a_h/|a_h|);
  /// heads with w_h = 0 untouched.
  kHeadwise,
};

/// "reference" / "headwise". Throws std::invalid_argument otherwise.
SteeringMode parse_steering_mode(const std::string& name);
std::string steering_mode_name(SteeringMode mode);

struct SteeringOptions {
  SteeringMode mode = SteeringMode::kReference;
  double alpha = 0.4;
  int64_t layer_start = 0;   ///< first steered layer
  int64_t layer_end = -1;    ///< one past the last steered layer; -1: all layers
  int64_t top_k_heads = 0;   ///< headwise: keep only the K most accurate heads (0: all)
};

/// The per-layer quantities both paths use, precomputed once.
class SteeringPlan {
 public:
  /// Throws std::invalid_argument when the vectors do not match the model, options are out
  /// of range, a steered layer's direction is zero, or headwise mode leaves no head with
  /// a positive weight.
  SteeringPlan(const SteeringVectors& vectors, const ModelConfig& config, const SteeringOptions& options);

  /// Applies the intervention of `layer` to an activation at the vectors' site:
  /// (B, T, d) for attn_out or (B, T, H, Dh) for hook_z. Vectorised fast path.
  at::Tensor apply(int64_t layer, const at::Tensor& activation) const;

  /// The same formulas, one position and one head at a time in double precision: the
  /// oracle the fast path is tested against.
  at::Tensor apply_naive(int64_t layer, const at::Tensor& activation) const;

  /// Moves the precomputed directions to `device` (attach_steering does this for the model).
  void to(c10::Device device);

  bool steers(int64_t layer) const;
  const SteeringOptions& options() const { return options_; }
  SteeringSite site() const { return site_; }
  /// (H) headwise weights of `layer` (all layers share the normalisation).
  at::Tensor head_weights(int64_t layer) const;

 private:
  SteeringOptions options_;
  SteeringSite site_;
  int64_t n_layers_, n_heads_, head_dim_;
  at::Tensor layer_unit_;     // (L, d): reference mode, a_l / |a_l|
  at::Tensor head_unit_;      // (L, H, Dh): headwise, a_h / |a_h|
  at::Tensor head_weight_;    // (L, H): headwise w_h
  at::Tensor layer_step_;     // (L, d): alpha a_l/|a_l|, precomputed for the fast path
  at::Tensor head_step_;      // (L, H, Dh): alpha w_h a_h/|a_h|
  at::Tensor head_active_;    // (L, 1, H, 1) bool: w_h > 0
};

/// Removes the steering hooks on remove() or destruction.
class SteeringHandle {
 public:
  SteeringHandle() = default;
  explicit SteeringHandle(std::vector<HookHandle> hooks, std::shared_ptr<const SteeringPlan> plan);
  void remove();
  bool active() const;
  const SteeringPlan* plan() const { return plan_.get(); }

 private:
  std::vector<HookHandle> hooks_;
  std::shared_ptr<const SteeringPlan> plan_;
};

/// Registers the steering edits on `hooks` for every steered layer. alpha = 0 registers
/// nothing, so it is an exact no-op (bit-identical logits).
SteeringHandle attach_steering(Hooks& hooks, const Model& model, const SteeringVectors& vectors,
                               const SteeringOptions& options);

}  // namespace destein

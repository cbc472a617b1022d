#pragma once
/// Site activations of texts, averaged over their last positions: the raw material of
/// steering directions and probes.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "destein/runtime/model.hpp"

namespace destein {

/// Where directions are read and steering is applied.
enum class SteeringSite {
  kAttnOut,  ///< blocks.{i}.hook_attn_out (B, T, d), cut into H slices of Dh: the reference code's site
  kHookZ,  ///< blocks.{i}.attn.hook_z (B, T, H, Dh): the true per-head outputs
};

/// "attn_out" / "hook_z". Throws std::invalid_argument for anything else.
SteeringSite parse_steering_site(const std::string& name);
std::string steering_site_name(SteeringSite site);

/// The hook point suffix of a site ("hook_attn_out" or "attn.hook_z").
HookSite hook_site_of(SteeringSite site);

struct ActivationOptions {
  SteeringSite site = SteeringSite::kAttnOut;
  int64_t last_k = 8;       ///< positions averaged, counted back from the last token
  int64_t batch_size = 16;  ///< texts per forward pass (left padded)
  /// Extra hooks active during the capture (e.g. steering, to record steered
  /// activations); the capture's observers see their edits. May be null.
  Hooks* hooks = nullptr;
};

/// Runs every token sequence through `model` and returns, per sequence and layer, the
/// site activation averaged over its last `last_k` real positions (all of them when the
/// sequence is shorter): (N, L, H, Dh) float32 on CPU. Batched results equal one-by-one
/// runs (left padding is masked). Throws std::invalid_argument for an empty sequence or
/// last_k < 1.
at::Tensor capture_site_activations(const Model& model,
                                    const std::vector<std::vector<int64_t>>& sequences,
                                    const ActivationOptions& options,
                                    const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace destein

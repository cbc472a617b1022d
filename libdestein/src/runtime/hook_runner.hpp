#pragma once
/// How the forward pass fires a run's hooks (Hooks::run is not public API).

#include <cstdint>
#include <utility>

#include "destein/runtime/hooks.hpp"

namespace destein {

struct HookRunner {
  /// Runs the hooks at (layer, site) on `activation`; returns it, edited. Throws
  /// std::runtime_error when an editor changes shape, dtype or device.
  static at::Tensor run(const Hooks& hooks, int64_t layer, HookSite site, at::Tensor activation,
                        const at::Tensor& token_mask, int64_t past_length) {
    return hooks.run(layer, site, std::move(activation), token_mask, past_length);
  }
};

}  // namespace destein

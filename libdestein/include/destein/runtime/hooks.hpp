#pragma once
/// Named hook points of the native forward pass, where activations can be observed
/// (captured) and edited (replaced). Names follow TransformerLens:
///
///   blocks.{i}.hook_resid_pre   (B, T, d)      input of block i
///   blocks.{i}.attn.hook_z      (B, T, H, Dh)  per-head attention outputs, before o_proj
///   blocks.{i}.hook_attn_out    (B, T, d)      attention output after o_proj (+ bias)
///   blocks.{i}.hook_mlp_out     (B, T, d)      MLP output
///   blocks.{i}.hook_resid_post  (B, T, d)      output of block i
///
/// `blocks.*.…` registers on every layer. Hooks belong to a run, not to the weights: pass
/// a Hooks object to Model::forward / generate(). With no hook at a point, the forward
/// pass does not even look up a callback there.
///
///   destein::Hooks hooks;
///   std::vector<at::Tensor> seen;
///   auto h = hooks.observe("blocks.3.attn.hook_z",
///                          [&](const at::Tensor& z, const destein::HookContext&) { seen.push_back(z.clone()); });
///   model.forward(ids, {.hooks = &hooks});
///   h.remove();  // or let `h` go out of scope

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace destein {

enum class HookSite { kResidPre = 0, kAttnZ, kAttnOut, kMlpOut, kResidPost };
constexpr int kHookSiteCount = 5;

/// "hook_resid_pre", "attn.hook_z", ...
std::string hook_site_suffix(HookSite site);

/// Full hook point name of `site` in `layer`, e.g. "blocks.3.attn.hook_z".
std::string hook_point_name(int64_t layer, HookSite site);

/// Every hook point name of a model with `n_layers` layers, in forward order.
std::vector<std::string> hook_point_names(int64_t n_layers);

/// What a hook is told besides the activation.
struct HookContext {
  int64_t layer;
  HookSite site;
  /// (B, T) bool on the activation's device: true where the position holds a real token,
  /// false at left padding.
  const at::Tensor& token_mask;
  /// Number of positions already in the KV cache before this call (0 without a cache).
  int64_t past_length;
};

using ObserveFn = std::function<void(const at::Tensor& activation, const HookContext& ctx)>;
/// Returns the replacement activation, of the same shape, dtype and device.
using EditFn = std::function<at::Tensor(const at::Tensor& activation, const HookContext& ctx)>;

/// Removes its hook when remove() is called or when it is destroyed; release() keeps the
/// hook for the lifetime of the Hooks object. Safe to outlive the Hooks object.
class HookHandle {
 public:
  HookHandle() = default;
  HookHandle(HookHandle&& other) noexcept;
  HookHandle& operator=(HookHandle&& other) noexcept;
  HookHandle(const HookHandle&) = delete;
  HookHandle& operator=(const HookHandle&) = delete;
  ~HookHandle();

  void remove();
  void release();
  bool active() const;

 private:
  friend class Hooks;
  struct Registry;
  HookHandle(std::weak_ptr<Registry> registry, uint64_t id);
  std::weak_ptr<Registry> registry_;
  uint64_t id_ = 0;
};

/// A set of hooks for one run. Editors at a point run first, in registration order, each on
/// the previous editor's output; observers then see the final (edited) activation.
class Hooks {
 public:
  Hooks();

  /// Throws std::invalid_argument for a malformed name ("expected blocks.{i}.<site>").
  /// Layers beyond the model are reported by Model::forward.
  HookHandle observe(const std::string& name, ObserveFn fn);
  HookHandle edit(const std::string& name, EditFn fn);

  /// True when no hook is registered at all.
  bool empty() const;
  /// True when some hook sits at (layer, site).
  bool has(int64_t layer, HookSite site) const;
  /// Largest layer index any hook names (-1 when none, or only wildcards).
  int64_t max_layer() const;

 private:
  // The forward pass runs the hooks through HookRunner (src/runtime/hook_runner.hpp): a
  // user registers hooks, only the model fires them.
  friend struct HookRunner;
  at::Tensor run(int64_t layer, HookSite site, at::Tensor activation, const at::Tensor& token_mask,
                 int64_t past_length) const;
  HookHandle add(const std::string& name, ObserveFn observe, EditFn edit);
  std::shared_ptr<HookHandle::Registry> registry_;
};

}  // namespace destein

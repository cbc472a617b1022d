#include "destein/runtime/hooks.hpp"

#include <ATen/ATen.h>

#include <array>
#include <mutex>

#include "check.hpp"

namespace destein {

namespace {
constexpr std::array<const char*, kHookSiteCount> kSuffixes = {
    "hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_mlp_out", "hook_resid_post"};

struct ParsedName {
  int64_t layer;  // -1: every layer
  HookSite site;
};

ParsedName parse_hook_name(const std::string& name) {
  const std::string expected =
      "expected blocks.{i}.<point> or blocks.*.<point> with <point> one of hook_resid_pre, "
      "attn.hook_z, hook_attn_out, hook_mlp_out, hook_resid_post";
  DESTEIN_CHECK_ARG(name.rfind("blocks.", 0) == 0, "hook point '{}': {}", name, expected);
  size_t dot = name.find('.', 7);
  DESTEIN_CHECK_ARG(dot != std::string::npos, "hook point '{}': {}", name, expected);
  std::string layer_text = name.substr(7, dot - 7);
  std::string suffix = name.substr(dot + 1);
  ParsedName out{-1, HookSite::kResidPre};
  if (layer_text != "*") {
    DESTEIN_CHECK_ARG(
        !layer_text.empty() && layer_text.find_first_not_of("0123456789") == std::string::npos &&
            layer_text.size() < 9,
        "hook point '{}': layer '{}' is not a number; {}", name, layer_text, expected);
    out.layer = std::stoll(layer_text);
  }
  for (int i = 0; i < kHookSiteCount; ++i) {
    if (suffix == kSuffixes[i]) {
      out.site = static_cast<HookSite>(i);
      return out;
    }
  }
  throw std::invalid_argument(
      fmt::format("hook point '{}': unknown point '{}'; {}", name, suffix, expected));
}
}  // namespace

std::string hook_site_suffix(HookSite site) { return kSuffixes[static_cast<int>(site)]; }

std::string hook_point_name(int64_t layer, HookSite site) {
  return fmt::format("blocks.{}.{}", layer, hook_site_suffix(site));
}

std::vector<std::string> hook_point_names(int64_t n_layers) {
  std::vector<std::string> names;
  for (int64_t l = 0; l < n_layers; ++l) {
    for (int s = 0; s < kHookSiteCount; ++s)
      names.push_back(hook_point_name(l, static_cast<HookSite>(s)));
  }
  return names;
}

struct HookHandle::Registry {
  struct Entry {
    uint64_t id;
    ObserveFn observe;
    EditFn edit;
  };
  // Slot layer * kHookSiteCount + site; wildcard hooks (every layer) in their own slots.
  std::vector<std::vector<Entry>> by_point;
  std::array<std::vector<Entry>, kHookSiteCount> every_layer;
  uint64_t next_id = 1;
  size_t count = 0;
  int64_t max_layer = -1;

  bool remove(uint64_t id) {
    auto erase_from = [&](std::vector<Entry>& v) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (it->id == id) {
          v.erase(it);
          --count;
          return true;
        }
      }
      return false;
    };
    for (auto& v : every_layer) {
      if (erase_from(v)) return true;
    }
    for (auto& v : by_point) {
      if (erase_from(v)) return true;
    }
    return false;
  }

  bool contains(uint64_t id) const {
    auto in = [&](const std::vector<Entry>& v) {
      for (const auto& e : v) {
        if (e.id == id) return true;
      }
      return false;
    };
    for (const auto& v : every_layer) {
      if (in(v)) return true;
    }
    for (const auto& v : by_point) {
      if (in(v)) return true;
    }
    return false;
  }
};

HookHandle::HookHandle(std::weak_ptr<Registry> registry, uint64_t id)
    : registry_(std::move(registry)), id_(id) {}

HookHandle::HookHandle(HookHandle&& other) noexcept
    : registry_(std::move(other.registry_)), id_(other.id_) {
  other.id_ = 0;
}

HookHandle& HookHandle::operator=(HookHandle&& other) noexcept {
  if (this != &other) {
    remove();
    registry_ = std::move(other.registry_);
    id_ = other.id_;
    other.id_ = 0;
  }
  return *this;
}

HookHandle::~HookHandle() { remove(); }

void HookHandle::remove() {
  if (id_ == 0) return;
  if (auto reg = registry_.lock()) reg->remove(id_);
  id_ = 0;
}

void HookHandle::release() { id_ = 0; }

bool HookHandle::active() const {
  if (id_ == 0) return false;
  auto reg = registry_.lock();
  return reg && reg->contains(id_);
}

Hooks::Hooks() : registry_(std::make_shared<HookHandle::Registry>()) {}

HookHandle Hooks::add(const std::string& name, ObserveFn observe, EditFn edit) {
  ParsedName parsed = parse_hook_name(name);
  auto& reg = *registry_;
  HookHandle::Registry::Entry entry{reg.next_id++, std::move(observe), std::move(edit)};
  const uint64_t id = entry.id;
  if (parsed.layer < 0) {
    reg.every_layer[static_cast<int>(parsed.site)].push_back(std::move(entry));
  } else {
    size_t slot =
        static_cast<size_t>(parsed.layer) * kHookSiteCount + static_cast<int>(parsed.site);
    if (reg.by_point.size() <= slot) reg.by_point.resize(slot + 1);
    reg.by_point[slot].push_back(std::move(entry));
    reg.max_layer = std::max(reg.max_layer, parsed.layer);
  }
  ++reg.count;
  return HookHandle(registry_, id);
}

HookHandle Hooks::observe(const std::string& name, ObserveFn fn) {
  DESTEIN_CHECK_ARG(static_cast<bool>(fn), "Hooks::observe('{}'): empty callback", name);
  return add(name, std::move(fn), nullptr);
}

HookHandle Hooks::edit(const std::string& name, EditFn fn) {
  DESTEIN_CHECK_ARG(static_cast<bool>(fn), "Hooks::edit('{}'): empty callback", name);
  return add(name, nullptr, std::move(fn));
}

bool Hooks::empty() const { return registry_->count == 0; }

int64_t Hooks::max_layer() const { return registry_->max_layer; }

bool Hooks::has(int64_t layer, HookSite site) const {
  const auto& reg = *registry_;
  if (reg.count == 0) return false;
  if (!reg.every_layer[static_cast<int>(site)].empty()) return true;
  size_t slot = static_cast<size_t>(layer) * kHookSiteCount + static_cast<int>(site);
  return slot < reg.by_point.size() && !reg.by_point[slot].empty();
}

at::Tensor Hooks::run(int64_t layer, HookSite site, at::Tensor activation,
                      const at::Tensor& token_mask, int64_t past_length) const {
  const auto& reg = *registry_;
  HookContext ctx{layer, site, token_mask, past_length};
  const std::vector<HookHandle::Registry::Entry>* lists[2] = {
      &reg.every_layer[static_cast<int>(site)], nullptr};
  size_t slot = static_cast<size_t>(layer) * kHookSiteCount + static_cast<int>(site);
  if (slot < reg.by_point.size()) lists[1] = &reg.by_point[slot];
  // Editors apply in registration order; observers then see what flows on through the
  // model, so capturing under steering records the steered activations.
  for (const auto* list : lists) {
    if (!list) continue;
    for (const auto& e : *list) {
      if (!e.edit) continue;
      at::Tensor edited = e.edit(activation, ctx);
      DESTEIN_CHECK_IO(edited.defined() && edited.sizes() == activation.sizes() &&
                           edited.scalar_type() == activation.scalar_type() &&
                           edited.device() == activation.device(),
                       "hook at {} returned a tensor of shape {} {} on {}; expected shape {} {} "
                       "on {}",
                       hook_point_name(layer, site),
                       edited.defined() ? c10::str(edited.sizes()) : "undefined",
                       edited.defined() ? c10::toString(edited.scalar_type()) : "",
                       edited.defined() ? edited.device().str() : "", c10::str(activation.sizes()),
                       c10::toString(activation.scalar_type()), activation.device().str());
      activation = std::move(edited);
    }
  }
  for (const auto* list : lists) {
    if (!list) continue;
    for (const auto& e : *list) {
      if (e.observe) e.observe(activation, ctx);
    }
  }
  return activation;
}

}  // namespace destein

// SteeringController: per-row stacks of steering plans behind the hook points, their
// position windows, and the edit statistics that prove the steering acted.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "check.hpp"
#include "destein/steer/steering.hpp"

namespace destein {

namespace {

// What the edit statistics keep for one plan, on the activations' device (no host sync
// while generating). Index 0: prompt positions, 1: generated positions.
struct PlanStats {
  std::shared_ptr<const SteeringPlan> plan;
  at::Tensor layer_sum;  // (2, L) f64: sum of |x' - x| over the site vector
  at::Tensor head_sum;   // (2, L, H) f64: sum of |x'_h - x_h|
  at::Tensor count;      // (2, L) f64: real positions that passed the layer
};

bool window_includes_generated(SteeringPositions p) { return p != SteeringPositions::kPrompt; }

}  // namespace

struct SteeringController::State {
  int64_t n_layers, n_heads, head_dim;
  c10::Device device;
  bool uniform = true;
  SteeringStack uniform_stack;
  std::vector<SteeringStack> rows;
  std::vector<int64_t> generated_from;
  std::vector<PlanStats> stats;

  State(const ModelConfig& c, c10::Device d)
      : n_layers(c.n_layers), n_heads(c.n_heads), head_dim(c.head_dim), device(d) {}

  PlanStats& stats_for(const std::shared_ptr<const SteeringPlan>& plan) {
    for (auto& s : stats) {
      if (s.plan == plan) return s;
    }
    auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
    stats.push_back(PlanStats{plan, at::zeros({2, n_layers}, f64),
                              at::zeros({2, n_layers, n_heads}, f64),
                              at::zeros({2, n_layers}, f64)});
    return stats.back();
  }

  void register_stack(const SteeringStack& stack) {
    for (const auto& plan : stack) {
      DESTEIN_CHECK_ARG(plan != nullptr, "SteeringController: a stack holds a null plan");
      stats_for(plan);
    }
  }

  // Which positions of this call are generated: (B, T) bool on the device, and whether
  // all (1), none (0) or some (-1) are, known on the host (no device sync per call).
  struct Kinds {
    at::Tensor generated;
    int all = -1;
    Kinds select(const at::Tensor& idx) const { return {generated.index_select(0, idx), all}; }
  };

  Kinds kinds(int64_t B, int64_t T, int64_t past) const {
    auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device);
    bool per_row = false;
    for (int64_t g : generated_from) per_row = per_row || g >= 0;
    if (!per_row) return {at::full({B, T}, past > 0, bool_opts), past > 0 ? 1 : 0};
    DESTEIN_CHECK_ARG(
        static_cast<int64_t>(generated_from.size()) == B,
        "SteeringController: set_generated_from() gave {} rows, the forward call has {}",
        generated_from.size(), B);
    at::Tensor gf = at::tensor(generated_from, at::kLong).view({B, 1});
    at::Tensor column = past + at::arange(T, at::kLong).view({1, T});  // (1, T)
    at::Tensor g =
        at::where(gf >= 0, column >= gf, at::full({B, T}, past > 0, at::kBool));  // (B, T)
    const int all = g.all().item<bool>() ? 1 : (g.any().item<bool>() ? -1 : 0);
    return {g.to(device), all};
  }

  // Applies `stack`'s entries at (layer, site) to x (b, T, ...) in order, recording stats.
  at::Tensor apply_stack(const SteeringStack& stack, int64_t layer, HookSite site, at::Tensor x,
                         const Kinds& kinds, const at::Tensor& real) {
    const at::Tensor& generated = kinds.generated;
    const int64_t b = x.size(0), T = x.size(1);
    for (const auto& plan : stack) {
      if (hook_site_of(plan->site()) != site || !plan->steers(layer) || plan->options().alpha == 0)
        continue;
      // A window covering the whole call needs no mask (the fast path as without windows);
      // one covering none of it leaves x as it is.
      const SteeringPositions window = plan->options().positions;
      bool edit = true;
      at::Tensor edit_mask;  // undefined: every position of the call
      if (window != SteeringPositions::kAll) {
        const bool want_generated = window == SteeringPositions::kGenerated;
        if (kinds.all >= 0) {
          edit = (kinds.all == 1) == want_generated;
        } else {
          edit_mask = want_generated ? generated : generated.logical_not();
        }
      }
      at::Tensor y = edit ? plan->apply(layer, x, edit_mask) : x;
      PlanStats& st = stats_for(plan);
      // Norms in f32 (as cheap as the edit itself), sums in f64.
      at::Tensor delta = (y.to(at::kFloat) - x.to(at::kFloat)).reshape({b, T, n_heads, head_dim});
      at::Tensor head_sq = delta.square().sum(-1);  // (b, T, H)
      at::Tensor head_norm = head_sq.sqrt().to(at::kDouble);
      at::Tensor layer_norm = head_sq.sum(-1).sqrt().to(at::kDouble);  // (b, T)
      for (int kind = 0; kind < 2; ++kind) {
        at::Tensor sel =
            (real & (kind == 1 ? generated : generated.logical_not())).to(at::kDouble);  // (b, T)
        st.layer_sum[kind][layer] += (layer_norm * sel).sum();
        st.head_sum[kind][layer] += (head_norm * sel.unsqueeze(-1)).sum(at::IntArrayRef{0, 1});
        st.count[kind][layer] += sel.sum();
      }
      x = y;
    }
    return x;
  }

  at::Tensor run(int64_t layer, HookSite site, const at::Tensor& x, const HookContext& ctx) {
    const int64_t B = x.size(0), T = x.size(1);
    at::Tensor real = ctx.token_mask.defined()
                          ? ctx.token_mask.to(at::kBool)
                          : at::ones({B, T}, at::TensorOptions().dtype(at::kBool).device(device));
    if (uniform) {
      if (uniform_stack.empty()) return x;
      return apply_stack(uniform_stack, layer, site, x, kinds(B, T, ctx.past_length), real);
    }
    DESTEIN_CHECK_ARG(
        static_cast<int64_t>(rows.size()) == B,
        "SteeringController: set_rows() assigned {} rows but the forward call at {} has batch {}",
        rows.size(), hook_point_name(layer, site), B);
    const Kinds call = kinds(B, T, ctx.past_length);
    // Rows sharing a stack are steered together; unsteered rows are never touched.
    std::vector<bool> done(static_cast<size_t>(B), false);
    at::Tensor out = x;
    for (int64_t r = 0; r < B; ++r) {
      if (done[size_t(r)] || rows[size_t(r)].empty()) continue;
      std::vector<int64_t> members;
      for (int64_t q = r; q < B; ++q) {
        if (!done[size_t(q)] && rows[size_t(q)] == rows[size_t(r)]) {
          members.push_back(q);
          done[size_t(q)] = true;
        }
      }
      if (static_cast<int64_t>(members.size()) == B)
        return apply_stack(rows[size_t(r)], layer, site, x, call, real);
      at::Tensor idx = at::tensor(members, at::kLong).to(device);
      // Mixed rows' window flags may differ from the whole call's; recomputing `all` for
      // the subset would need a sync, so the subset keeps the mask (same values).
      Kinds sub = call.select(idx);
      at::Tensor steered = apply_stack(rows[size_t(r)], layer, site, x.index_select(0, idx), sub,
                                       real.index_select(0, idx));
      if (out.is_same(x)) out = x.clone();
      out.index_copy_(0, idx, steered);
    }
    return out;
  }
};

std::vector<std::string> SteeringReport::warnings() const {
  std::vector<std::string> out;
  for (const auto& e : entries) {
    if (e.generated_not_edited) {
      out.push_back(
          fmt::format("{}: {} generated positions passed the steered layers and none was edited{}",
                      e.label, e.generated_positions,
                      e.label.find("gate probe") != std::string::npos
                          ? " (the probe gate never opened)"
                          : " (steering did not act while decoding)"));
    }
  }
  return out;
}

SteeringController::SteeringController(Hooks& hooks, const ModelConfig& config, c10::Device device)
    : hooks_(&hooks), state_(std::make_shared<State>(config, device)) {}

SteeringController::~SteeringController() { remove(); }

void SteeringController::ensure_hooks(const SteeringStack& stack) {
  state_->register_stack(stack);
  for (const auto& plan : stack) {
    if (plan->options().alpha == 0) continue;  // alpha 0: an exact no-op, nothing registered
    const HookSite site = hook_site_of(plan->site());
    for (int64_t l = 0; l < state_->n_layers; ++l) {
      if (!plan->steers(l) || registered_.count({l, static_cast<int>(site)})) continue;
      registered_.insert({l, static_cast<int>(site)});
      std::shared_ptr<State> state = state_;
      handles_.push_back(hooks_->edit(
          hook_point_name(l, site), [state, l, site](const at::Tensor& x, const HookContext& ctx) {
            return state->run(l, site, x, ctx);
          }));
    }
  }
}

void SteeringController::set_uniform(SteeringStack stack) {
  ensure_hooks(stack);
  state_->uniform = true;
  state_->uniform_stack = std::move(stack);
  state_->rows.clear();
}

void SteeringController::set_rows(std::vector<SteeringStack> rows) {
  for (const auto& s : rows) ensure_hooks(s);
  state_->uniform = false;
  state_->uniform_stack.clear();
  state_->rows = std::move(rows);
}

void SteeringController::set_generated_from(std::vector<int64_t> columns) {
  state_->generated_from = std::move(columns);
}

SteeringReport SteeringController::report() const { return report_of(nullptr); }

SteeringReport SteeringController::report(const SteeringStack& stack) const {
  return report_of(&stack);
}

SteeringReport SteeringController::report_of(const SteeringStack* only) const {
  SteeringReport r;
  int64_t index = 0;
  for (const auto& st : state_->stats) {
    if (only && std::find(only->begin(), only->end(), st.plan) == only->end()) continue;
    const SteeringPlan& plan = *st.plan;
    const SteeringOptions& o = plan.options();
    SteeringReport::Entry e;
    e.label = fmt::format("entry {} ({}, alpha {}, positions {}, gate {})", index++,
                          steering_mode_name(o.mode), o.alpha, steering_positions_name(o.positions),
                          steering_gate_name(o.gate));
    e.mode = o.mode;
    e.positions = o.positions;
    e.heads = state_->n_heads;
    at::Tensor layer_sum = st.layer_sum.to(at::kCPU), head_sum = st.head_sum.to(at::kCPU),
               count = st.count.to(at::kCPU);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    double generated_edit = 0;
    for (int64_t l = 0; l < state_->n_layers; ++l) {
      if (!plan.steers(l)) continue;
      e.layers.push_back(l);
      for (int kind = 0; kind < 2; ++kind) {
        const double n = count[kind][l].item<double>();
        (kind == 0 ? e.prompt_layer_mean : e.generated_layer_mean)
            .push_back(n > 0 ? layer_sum[kind][l].item<double>() / n : nan);
        for (int64_t h = 0; h < state_->n_heads; ++h) {
          (kind == 0 ? e.prompt_head_mean : e.generated_head_mean)
              .push_back(n > 0 ? head_sum[kind][l][h].item<double>() / n : nan);
        }
      }
      generated_edit += layer_sum[1][l].item<double>();
    }
    if (!e.layers.empty()) {
      e.prompt_positions = static_cast<int64_t>(count[0][e.layers.front()].item<double>());
      e.generated_positions = static_cast<int64_t>(count[1][e.layers.front()].item<double>());
    }
    e.generated_not_edited = window_includes_generated(o.positions) && o.alpha > 0 &&
                             e.generated_positions > 0 && generated_edit == 0;
    r.entries.push_back(std::move(e));
  }
  return r;
}

void SteeringController::reset_stats() {
  for (auto& st : state_->stats) {
    st.layer_sum.zero_();
    st.head_sum.zero_();
    st.count.zero_();
  }
}

void SteeringController::remove() {
  for (auto& h : handles_) h.remove();
  handles_.clear();
  registered_.clear();
}

bool SteeringController::active() const {
  for (const auto& h : handles_) {
    if (h.active()) return true;
  }
  return false;
}

std::shared_ptr<const SteeringPlan> make_steering_plan(const Model& model,
                                                       const SteeringVectors& vectors,
                                                       const SteeringOptions& options) {
  auto plan = std::make_shared<SteeringPlan>(vectors, model.config(), options);
  plan->to(model.device());  // the fast path's constants live where the activations do
  return plan;
}

SteeringHandle::SteeringHandle(std::shared_ptr<SteeringController> controller, SteeringStack stack)
    : controller_(std::move(controller)), stack_(std::move(stack)) {}

void SteeringHandle::remove() {
  if (controller_) controller_->remove();
}

bool SteeringHandle::active() const { return controller_ && controller_->active(); }

SteeringReport SteeringHandle::report() const {
  return controller_ ? controller_->report(stack_) : SteeringReport{};
}

void SteeringHandle::reset_stats() {
  if (controller_) controller_->reset_stats();
}

SteeringHandle attach_steering(Hooks& hooks, const Model& model, SteeringStack stack) {
  auto controller = std::make_shared<SteeringController>(hooks, model.config(), model.device());
  controller->set_uniform(stack);
  return SteeringHandle(std::move(controller), std::move(stack));
}

SteeringHandle attach_steering(Hooks& hooks, const Model& model, const SteeringVectors& vectors,
                               const SteeringOptions& options) {
  return attach_steering(hooks, model, SteeringStack{make_steering_plan(model, vectors, options)});
}

}  // namespace destein

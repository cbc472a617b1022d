#include "destein/steer/steering.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "check.hpp"

namespace destein {

SteeringMode parse_steering_mode(const std::string& name) {
  if (name == "reference") return SteeringMode::kReference;
  if (name == "headwise") return SteeringMode::kHeadwise;
  throw std::invalid_argument(fmt::format("unknown steering mode '{}': expected reference or headwise", name));
}

std::string steering_mode_name(SteeringMode mode) {
  return mode == SteeringMode::kReference ? "reference" : "headwise";
}

SteeringPlan::SteeringPlan(const SteeringVectors& v, const ModelConfig& c, const SteeringOptions& o)
    : options_(o), site_(v.site), n_layers_(c.n_layers), n_heads_(c.n_heads), head_dim_(c.head_dim) {
  check_vectors_match_model(v, c);
  if (options_.layer_end < 0) options_.layer_end = n_layers_;
  DESTEIN_CHECK_ARG(0 <= options_.layer_start && options_.layer_start < options_.layer_end &&
                        options_.layer_end <= n_layers_,
                    "steering layer range [{}, {}) is not within the model's layers [0, {})", options_.layer_start,
                    options_.layer_end, n_layers_);
  DESTEIN_CHECK_ARG(std::isfinite(options_.alpha) && options_.alpha >= 0,
                    "steering alpha must be a finite number >= 0, found {}", options_.alpha);
  DESTEIN_CHECK_ARG(options_.top_k_heads >= 0, "top_k_heads must be >= 0, found {}", options_.top_k_heads);
  DESTEIN_CHECK_ARG(options_.top_k_heads == 0 || options_.mode == SteeringMode::kHeadwise,
                    "top_k_heads applies to headwise mode only (the reference mode steers whole layers)");
  at::Tensor dir = v.directions.to(at::kDouble);  // (L, H, Dh)
  at::Tensor acc = v.probe_accuracy.defined() ? v.probe_accuracy.to(at::kDouble)
                                               : at::Tensor();

  if (options_.mode == SteeringMode::kReference) {
    at::Tensor scaled = acc.defined() ? dir * (1 + acc).unsqueeze(-1) : dir;
    at::Tensor a = scaled.reshape({n_layers_, n_heads_ * head_dim_});  // (L, d)
    at::Tensor norms = a.norm(2, -1, /*keepdim=*/true);
    for (int64_t l = options_.layer_start; l < options_.layer_end; ++l) {
      DESTEIN_CHECK_ARG(norms[l].item<double>() > 0, "the steering direction of layer {} is zero", l);
    }
    layer_unit_ = (a / norms).to(at::kFloat);
    layer_step_ = options_.alpha * layer_unit_;
  } else {
    at::Tensor norms = dir.norm(2, -1, /*keepdim=*/true);  // (L, H, 1)
    DESTEIN_CHECK_ARG((norms > 0).all().item<bool>(), "a head direction is zero: headwise steering needs every head");
    head_unit_ = (dir / norms).to(at::kFloat);
    at::Tensor w;
    if (acc.defined()) {
      const double best = acc.max().item<double>();
      DESTEIN_CHECK_ARG(best > 0.5,
                        "headwise steering: no probe is better than chance (best accuracy {:.3f}); use more "
                        "pairs or the reference mode",
                        best);
      w = ((acc - 0.5) / (best - 0.5)).clamp(0, 1);
      if (options_.top_k_heads > 0 && options_.top_k_heads < acc.numel()) {
        // Keep the K most accurate heads (ties broken by position, deterministically).
        at::Tensor order = std::get<1>(acc.reshape({-1}).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
        at::Tensor keep = at::zeros({acc.numel()}, at::kBool);
        keep.index_fill_(0, order.narrow(0, 0, options_.top_k_heads), true);
        w = w * keep.view_as(w).to(at::kDouble);
      }
    } else {
      w = at::ones({n_layers_, n_heads_}, at::kDouble);
      if (options_.top_k_heads > 0) {
        throw std::invalid_argument("top_k_heads needs probe accuracies in the vectors file");
      }
    }
    head_weight_ = w.to(at::kFloat);
    head_step_ = options_.alpha * head_weight_.unsqueeze(-1) * head_unit_;           // (L, H, Dh)
    head_active_ = (head_weight_ > 0).view({n_layers_, 1, n_heads_, 1});            // (L, 1, H, 1)
  }
}

void SteeringPlan::to(c10::Device device) {
  for (at::Tensor* t : {&layer_unit_, &head_unit_, &head_weight_, &layer_step_, &head_step_, &head_active_}) {
    if (t->defined()) *t = t->to(device);
  }
}

bool SteeringPlan::steers(int64_t layer) const {
  return layer >= options_.layer_start && layer < options_.layer_end;
}

at::Tensor SteeringPlan::head_weights(int64_t layer) const {
  return head_weight_.defined() ? head_weight_[layer] : at::ones({n_heads_});
}

at::Tensor SteeringPlan::apply(int64_t layer, const at::Tensor& activation) const {
  if (!steers(layer) || options_.alpha == 0) return activation;
  const auto sizes = activation.sizes().vec();
  at::Tensor x = activation.to(at::kFloat);
  if (options_.mode == SteeringMode::kReference) {
    x = x.reshape({-1, n_heads_ * head_dim_});                       // (P, d)
    const at::Tensor& alpha_a = layer_step_[layer];                  // (d): alpha a_l/|a_l|
    at::Tensor norm = x.norm(2, -1, /*keepdim=*/true);               // (P, 1)
    at::Tensor v = x / norm - alpha_a;
    at::Tensor out = v * (norm / v.norm(2, -1, /*keepdim=*/true));
    out = at::where(norm > 0, out, x);                               // a zero vector stays zero
    return out.reshape(sizes).to(activation.scalar_type());
  }
  x = x.reshape({-1, n_heads_, head_dim_});                          // (P, H, Dh)
  const at::Tensor& a = head_unit_[layer];                           // (H, Dh)
  const at::Tensor& step = head_step_[layer];                        // (H, Dh): alpha w_h a_h/|a_h|
  at::Tensor norm = x.norm(2, -1, /*keepdim=*/true);                 // (P, H, 1)
  at::Tensor u = x / norm;
  at::Tensor cos = (u * a).sum(-1, /*keepdim=*/true);                // (P, H, 1)
  at::Tensor v = u - (1 + cos.clamp_min(0)) * step;
  at::Tensor out = v * (norm / v.norm(2, -1, /*keepdim=*/true));
  out = at::where((norm > 0) & head_active_[layer], out, x);         // w_h = 0: head untouched
  return out.reshape(sizes).to(activation.scalar_type());
}

at::Tensor SteeringPlan::apply_naive(int64_t layer, const at::Tensor& activation) const {
  if (!steers(layer) || options_.alpha == 0) return activation;
  const int64_t H = n_heads_, Dh = head_dim_, d = H * Dh;
  at::Tensor x = activation.to(at::kDouble).reshape({-1, d}).contiguous();
  at::Tensor out = x.clone();
  auto xa = x.accessor<double, 2>();
  auto oa = out.accessor<double, 2>();
  const double alpha = options_.alpha;
  for (int64_t p = 0; p < x.size(0); ++p) {
    if (options_.mode == SteeringMode::kReference) {
      at::Tensor unit = layer_unit_[layer].to(at::kCPU, at::kDouble).contiguous();
      auto ua = unit.accessor<double, 1>();
      double n = 0;
      for (int64_t i = 0; i < d; ++i) n += xa[p][i] * xa[p][i];
      n = std::sqrt(n);
      if (n == 0) continue;
      std::vector<double> v(d);
      double vn = 0;
      for (int64_t i = 0; i < d; ++i) {
        v[i] = xa[p][i] / n - alpha * ua[i];
        vn += v[i] * v[i];
      }
      vn = std::sqrt(vn);
      for (int64_t i = 0; i < d; ++i) oa[p][i] = n * v[i] / vn;
      continue;
    }
    for (int64_t h = 0; h < H; ++h) {
      const double w = head_weight_[layer][h].item<double>();
      if (w == 0) continue;
      at::Tensor unit = head_unit_[layer][h].to(at::kCPU, at::kDouble).contiguous();
      auto ua = unit.accessor<double, 1>();
      double n = 0;
      for (int64_t i = 0; i < Dh; ++i) n += xa[p][h * Dh + i] * xa[p][h * Dh + i];
      n = std::sqrt(n);
      if (n == 0) continue;
      double cos = 0;
      for (int64_t i = 0; i < Dh; ++i) cos += xa[p][h * Dh + i] / n * ua[i];
      const double coef = alpha * w * (1 + std::max(0.0, cos));
      std::vector<double> v(Dh);
      double vn = 0;
      for (int64_t i = 0; i < Dh; ++i) {
        v[i] = xa[p][h * Dh + i] / n - coef * ua[i];
        vn += v[i] * v[i];
      }
      vn = std::sqrt(vn);
      for (int64_t i = 0; i < Dh; ++i) oa[p][h * Dh + i] = n * v[i] / vn;
    }
  }
  return out.reshape(activation.sizes()).to(activation.scalar_type());
}

SteeringHandle::SteeringHandle(std::vector<HookHandle> hooks, std::shared_ptr<const SteeringPlan> plan)
    : hooks_(std::move(hooks)), plan_(std::move(plan)) {}

void SteeringHandle::remove() {
  for (auto& h : hooks_) h.remove();
  hooks_.clear();
}

bool SteeringHandle::active() const {
  for (const auto& h : hooks_) {
    if (h.active()) return true;
  }
  return false;
}

SteeringHandle attach_steering(Hooks& hooks, const Model& model, const SteeringVectors& vectors,
                               const SteeringOptions& options) {
  auto mutable_plan = std::make_shared<SteeringPlan>(vectors, model.config(), options);
  mutable_plan->to(model.device());  // the fast path's constants live where the activations do
  std::shared_ptr<const SteeringPlan> plan = std::move(mutable_plan);
  std::vector<HookHandle> handles;
  if (options.alpha == 0) return SteeringHandle(std::move(handles), plan);  // exact no-op
  const HookSite site = hook_site_of(plan->site());
  for (int64_t l = 0; l < model.config().n_layers; ++l) {
    if (!plan->steers(l)) continue;
    handles.push_back(hooks.edit(hook_point_name(l, site), [plan, l](const at::Tensor& x, const HookContext&) {
      return plan->apply(l, x);
    }));
  }
  return SteeringHandle(std::move(handles), plan);
}

}  // namespace destein

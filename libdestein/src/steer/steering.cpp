#include "destein/steer/steering.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "check.hpp"

namespace destein {

SteeringMode parse_steering_mode(const std::string& name) {
  if (name == "reference") return SteeringMode::kReference;
  if (name == "headwise") return SteeringMode::kHeadwise;
  throw std::invalid_argument(
      fmt::format("unknown steering mode '{}': expected reference or headwise", name));
}

std::string steering_mode_name(SteeringMode mode) {
  return mode == SteeringMode::kReference ? "reference" : "headwise";
}

SteeringPositions parse_steering_positions(const std::string& name) {
  if (name == "all") return SteeringPositions::kAll;
  if (name == "prompt") return SteeringPositions::kPrompt;
  if (name == "generated") return SteeringPositions::kGenerated;
  throw std::invalid_argument(
      fmt::format("unknown steering positions '{}': expected all, prompt or generated", name));
}

std::string steering_positions_name(SteeringPositions positions) {
  switch (positions) {
    case SteeringPositions::kPrompt:
      return "prompt";
    case SteeringPositions::kGenerated:
      return "generated";
    default:
      return "all";
  }
}

SteeringGate parse_steering_gate(const std::string& name) {
  if (name == "none") return SteeringGate::kNone;
  if (name == "probe") return SteeringGate::kProbe;
  throw std::invalid_argument(
      fmt::format("unknown steering gate '{}': expected none or probe", name));
}

std::string steering_gate_name(SteeringGate gate) {
  return gate == SteeringGate::kProbe ? "probe" : "none";
}

struct SteeringPlan::Tensors {
  int64_t n_layers = 0, n_heads = 0, head_dim = 0;
  at::Tensor layer_unit;    // (L, d): reference mode, a_l / |a_l|
  at::Tensor head_unit;     // (L, H, Dh): headwise, a_h / |a_h|
  at::Tensor head_weight;   // (L, H): headwise w_h
  at::Tensor layer_step;    // (L, d): alpha a_l/|a_l|, precomputed for the fast path
  at::Tensor head_step;     // (L, H, Dh): alpha w_h a_h/|a_h|
  at::Tensor head_active;   // (L, 1, H, 1) bool: w_h > 0
  at::Tensor probe_weight;  // (L, H, Dh): gate probes, w_h / scale_h (scaling folded in)
  at::Tensor probe_bias;    // (L, H): b_h - w_h . (mean_h / scale_h)
  at::Tensor probe_weight_raw, probe_bias_raw, probe_mean,
      probe_scale;  // as stored, for the naive path
};

SteeringPlan::SteeringPlan(const SteeringVectors& v, const ModelConfig& c, const SteeringOptions& o)
    : options_(o), site_(v.site), t_(std::make_shared<Tensors>()) {
  t_->n_layers = c.n_layers;
  t_->n_heads = c.n_heads;
  t_->head_dim = c.head_dim;
  check_vectors_match_model(v, c);
  if (options_.layer_end < 0) options_.layer_end = t_->n_layers;
  DESTEIN_CHECK_ARG(0 <= options_.layer_start && options_.layer_start < options_.layer_end &&
                        options_.layer_end <= t_->n_layers,
                    "steering layer range [{}, {}) is not within the model's layers [0, {})",
                    options_.layer_start, options_.layer_end, t_->n_layers);
  DESTEIN_CHECK_ARG(std::isfinite(options_.alpha) && options_.alpha >= 0,
                    "steering alpha must be a finite number >= 0, found {}", options_.alpha);
  DESTEIN_CHECK_ARG(options_.top_k_heads >= 0, "top_k_heads must be >= 0, found {}",
                    options_.top_k_heads);
  DESTEIN_CHECK_ARG(
      options_.top_k_heads == 0 || options_.mode == SteeringMode::kHeadwise,
      "top_k_heads applies to headwise mode only (the reference mode steers whole layers)");
  DESTEIN_CHECK_ARG(options_.gate_threshold >= 0 && options_.gate_threshold < 1,
                    "steering gate_threshold must be in [0, 1) (0: soft gate), found {}",
                    options_.gate_threshold);
  DESTEIN_CHECK_ARG(options_.gate == SteeringGate::kProbe || options_.gate_threshold == 0,
                    "gate_threshold applies to gate: probe only");
  if (options_.gate == SteeringGate::kProbe) {
    DESTEIN_CHECK_ARG(
        v.has_gate_probes(),
        "gate: probe needs the per-head probes in the vectors file, and these vectors have none "
        "(a destein-vectors/1 file, or one written with probes disabled); recompute them with "
        "`destein vectors` (probes.enabled: true) or use gate: none");
    t_->probe_weight_raw = v.probe_weight.to(at::kDouble);    // (L, H, Dh)
    t_->probe_bias_raw = v.probe_bias.to(at::kDouble);        // (L, H)
    t_->probe_mean = v.probe_feature_mean.to(at::kDouble);    // (L, H, Dh)
    t_->probe_scale = v.probe_feature_scale.to(at::kDouble);  // (L, H, Dh)
    // w . ((x - m) / s) + b = (w / s) . x + (b - (w / s) . m): one product per head at run time.
    at::Tensor folded = t_->probe_weight_raw / t_->probe_scale;
    t_->probe_weight = folded.to(at::kFloat);
    t_->probe_bias = (t_->probe_bias_raw - (folded * t_->probe_mean).sum(-1)).to(at::kFloat);
  }
  at::Tensor dir = v.directions.to(at::kDouble);  // (L, H, Dh)
  at::Tensor acc = v.probe_accuracy.defined() ? v.probe_accuracy.to(at::kDouble) : at::Tensor();

  if (options_.mode == SteeringMode::kReference) {
    at::Tensor scaled = acc.defined() ? dir * (1 + acc).unsqueeze(-1) : dir;
    at::Tensor a = scaled.reshape({t_->n_layers, t_->n_heads * t_->head_dim});  // (L, d)
    at::Tensor norms = a.norm(2, -1, /*keepdim=*/true);
    for (int64_t l = options_.layer_start; l < options_.layer_end; ++l) {
      DESTEIN_CHECK_ARG(norms[l].item<double>() > 0, "the steering direction of layer {} is zero",
                        l);
    }
    t_->layer_unit = (a / norms).to(at::kFloat);
    t_->layer_step = options_.alpha * t_->layer_unit;
  } else {
    at::Tensor norms = dir.norm(2, -1, /*keepdim=*/true);  // (L, H, 1)
    DESTEIN_CHECK_ARG((norms > 0).all().item<bool>(),
                      "a head direction is zero: headwise steering needs every head");
    t_->head_unit = (dir / norms).to(at::kFloat);
    at::Tensor w;
    if (acc.defined()) {
      const double best = acc.max().item<double>();
      DESTEIN_CHECK_ARG(
          best > 0.5,
          "headwise steering: no probe is better than chance (best accuracy {:.3f}); use more "
          "pairs or the reference mode",
          best);
      w = ((acc - 0.5) / (best - 0.5)).clamp(0, 1);
      if (options_.top_k_heads > 0 && options_.top_k_heads < acc.numel()) {
        // Keep the K most accurate heads (ties broken by position, deterministically).
        at::Tensor order =
            std::get<1>(acc.reshape({-1}).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
        at::Tensor keep = at::zeros({acc.numel()}, at::kBool);
        keep.index_fill_(0, order.narrow(0, 0, options_.top_k_heads), true);
        w = w * keep.view_as(w).to(at::kDouble);
      }
    } else {
      w = at::ones({t_->n_layers, t_->n_heads}, at::kDouble);
      if (options_.top_k_heads > 0) {
        throw std::invalid_argument("top_k_heads needs probe accuracies in the vectors file");
      }
    }
    t_->head_weight = w.to(at::kFloat);
    t_->head_step = options_.alpha * t_->head_weight.unsqueeze(-1) * t_->head_unit;  // (L, H, Dh)
    t_->head_active =
        (t_->head_weight > 0).view({t_->n_layers, 1, t_->n_heads, 1});  // (L, 1, H, 1)
  }
}

void SteeringPlan::to(c10::Device device) {
  t_ = std::make_shared<Tensors>(*t_);  // a copy of this plan keeps its own device
  for (at::Tensor* t : {&t_->layer_unit, &t_->head_unit, &t_->head_weight, &t_->layer_step,
                        &t_->head_step, &t_->head_active, &t_->probe_weight, &t_->probe_bias}) {
    if (t->defined()) *t = t->to(device);
  }
}

bool SteeringPlan::steers(int64_t layer) const {
  return layer >= options_.layer_start && layer < options_.layer_end;
}

at::Tensor SteeringPlan::head_weights(int64_t layer) const {
  return t_->head_weight.defined() ? t_->head_weight[layer] : at::ones({t_->n_heads});
}

at::Tensor SteeringPlan::gate(int64_t layer, const at::Tensor& activation) const {
  if (!t_->probe_weight.defined())
    throw std::logic_error("SteeringPlan::gate: this plan has no probe gate");
  auto sizes = activation.sizes().vec();
  at::Tensor p;
  if (activation.device().is_cpu()) {
    // One fixed-order loop per (position, head): ATen's reductions and vectorised sigmoid
    // round an element differently depending on where it falls in the buffer (its vector
    // body or scalar tail), so the gate of a position moved with the number of rows in the
    // batch; this way it is the same bits in any batch (results independent of
    // prompts_per_batch and of which methods share a batch).
    at::Tensor x = activation.to(at::kFloat)
                       .reshape({-1, t_->n_heads, t_->head_dim})
                       .contiguous();  // (P, H, Dh)
    at::Tensor w = t_->probe_weight[layer].contiguous(), b = t_->probe_bias[layer].contiguous();
    const int64_t P = x.size(0), H = t_->n_heads, Dh = t_->head_dim;
    p = at::empty({P, H}, at::kFloat);
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    float* pp = p.data_ptr<float>();
    for (int64_t r = 0; r < P; ++r) {
      for (int64_t h = 0; h < H; ++h) {
        double z = bp[h];
        const float* xv = xp + (r * H + h) * Dh;
        const float* wv = wp + h * Dh;
        for (int64_t i = 0; i < Dh; ++i)
          z += static_cast<double>(xv[i]) * static_cast<double>(wv[i]);
        pp[r * H + h] = static_cast<float>(1.0 / (1.0 + std::exp(-z)));
      }
    }
  } else {
    at::Tensor x =
        activation.to(at::kFloat).reshape({-1, t_->n_heads, t_->head_dim});          // (P, H, Dh)
    p = at::sigmoid((x * t_->probe_weight[layer]).sum(-1) + t_->probe_bias[layer]);  // (P, H)
  }
  if (options_.gate_threshold > 0) p = (p >= options_.gate_threshold).to(at::kFloat);
  return p.reshape({sizes[0], sizes[1], t_->n_heads}).to(activation.device());
}

at::Tensor SteeringPlan::apply(int64_t layer, const at::Tensor& activation,
                               const at::Tensor& edit_mask) const {
  if (!steers(layer) || options_.alpha == 0) return activation;
  const auto sizes = activation.sizes().vec();
  at::Tensor x = activation.to(at::kFloat);
  at::Tensor out;
  if (options_.mode == SteeringMode::kReference) {
    at::Tensor xd = x.reshape({-1, t_->n_heads * t_->head_dim});  // (P, d)
    const at::Tensor& alpha_a = t_->layer_step[layer];            // (d): alpha a_l/|a_l|
    at::Tensor norm = xd.norm(2, -1, /*keepdim=*/true);           // (P, 1)
    at::Tensor v = xd / norm - alpha_a;
    out = v * (norm / v.norm(2, -1, /*keepdim=*/true));
    out = at::where(norm > 0, out, xd);  // a zero vector stays zero
  } else {
    at::Tensor xh = x.reshape({-1, t_->n_heads, t_->head_dim});  // (P, H, Dh)
    const at::Tensor& a = t_->head_unit[layer];                  // (H, Dh)
    const at::Tensor& step = t_->head_step[layer];               // (H, Dh): alpha w_h a_h/|a_h|
    at::Tensor norm = xh.norm(2, -1, /*keepdim=*/true);          // (P, H, 1)
    at::Tensor u = xh / norm;
    at::Tensor cos = (u * a).sum(-1, /*keepdim=*/true);  // (P, H, 1)
    at::Tensor v = u - (1 + cos.clamp_min(0)) * step;
    out = v * (norm / v.norm(2, -1, /*keepdim=*/true));
    out = at::where((norm > 0) & t_->head_active[layer], out, xh);  // w_h = 0: head untouched
  }
  if (options_.gate == SteeringGate::kNone && !edit_mask.defined()) {
    return out.reshape(sizes).to(activation.scalar_type());
  }
  at::Tensor xh = x.reshape({-1, t_->n_heads, t_->head_dim});  // (P, H, Dh)
  out = out.reshape({-1, t_->n_heads, t_->head_dim});
  if (options_.gate == SteeringGate::kProbe) {
    at::Tensor g = gate(layer, activation).reshape({-1, t_->n_heads, 1});  // (P, H, 1)
    // The gate scales the edit; g = 0 leaves the slice bit for bit, a hard g = 1 takes x' as is.
    at::Tensor mixed = options_.gate_threshold > 0 ? out : xh + g * (out - xh);
    out = at::where(g > 0, mixed, xh);
  }
  if (edit_mask.defined()) {
    out = at::where(edit_mask.to(at::kBool).reshape({-1, 1, 1}), out, xh);
  }
  return out.reshape(sizes).to(activation.scalar_type());
}

at::Tensor SteeringPlan::apply_naive(int64_t layer, const at::Tensor& activation,
                                     const at::Tensor& edit_mask) const {
  if (!steers(layer) || options_.alpha == 0) return activation;
  const int64_t H = t_->n_heads, Dh = t_->head_dim, d = H * Dh;
  at::Tensor x = activation.to(at::kDouble).reshape({-1, d}).contiguous();
  at::Tensor out = x.clone();
  auto xa = x.accessor<double, 2>();
  auto oa = out.accessor<double, 2>();
  const double alpha = options_.alpha;
  for (int64_t p = 0; p < x.size(0); ++p) {
    if (options_.mode == SteeringMode::kReference) {
      at::Tensor unit = t_->layer_unit[layer].to(at::kCPU, at::kDouble).contiguous();
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
      const double w = t_->head_weight[layer][h].item<double>();
      if (w == 0) continue;
      at::Tensor unit = t_->head_unit[layer][h].to(at::kCPU, at::kDouble).contiguous();
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
  at::Tensor mask;
  if (edit_mask.defined()) mask = edit_mask.to(at::kCPU, at::kBool).reshape({-1}).contiguous();
  for (int64_t p = 0; p < x.size(0); ++p) {
    if (mask.defined() && !mask[p].item<bool>()) {
      for (int64_t i = 0; i < d; ++i) oa[p][i] = xa[p][i];
      continue;
    }
    if (options_.gate != SteeringGate::kProbe) continue;
    for (int64_t h = 0; h < H; ++h) {
      // The probe on the head's slice of the entry's input: sigmoid(w . ((x - m) / s) + b).
      double z = t_->probe_bias_raw[layer][h].item<double>();
      for (int64_t i = 0; i < Dh; ++i) {
        z += t_->probe_weight_raw[layer][h][i].item<double>() *
             (xa[p][h * Dh + i] - t_->probe_mean[layer][h][i].item<double>()) /
             t_->probe_scale[layer][h][i].item<double>();
      }
      double g = 1.0 / (1.0 + std::exp(-z));
      if (options_.gate_threshold > 0) g = g >= options_.gate_threshold ? 1.0 : 0.0;
      for (int64_t i = 0; i < Dh; ++i)
        oa[p][h * Dh + i] = xa[p][h * Dh + i] + g * (oa[p][h * Dh + i] - xa[p][h * Dh + i]);
    }
  }
  return out.reshape(activation.sizes()).to(activation.scalar_type());
}

std::shared_ptr<const SteeringPlan> load_steering_plan(const std::string& path,
                                                       const SteeringOptions& options,
                                                       const Model& model) {
  SteeringVectors vectors = load_steering_vectors(path);
  try {
    check_vectors_match_model(vectors, model.config(), path);
    return make_steering_plan(model, vectors, options);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    if (what.rfind(path, 0) == 0) throw;
    throw std::invalid_argument(fmt::format("{}: {}", path, what));
  }
}

namespace {
nlohmann::json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}
}  // namespace

nlohmann::json steering_report_json(const SteeringReport& report, bool heads) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : report.entries) {
    nlohmann::json j = {{"entry", e.label},
                        {"layers", e.layers},
                        {"prompt_positions", e.prompt_positions},
                        {"generated_positions", e.generated_positions},
                        {"generated_not_edited", e.generated_not_edited}};
    for (int kind = 0; kind < 2; ++kind) {
      const auto& layer = kind == 0 ? e.prompt_layer_mean : e.generated_layer_mean;
      const auto& head = kind == 0 ? e.prompt_head_mean : e.generated_head_mean;
      nlohmann::json lj = nlohmann::json::array();
      for (double v : layer) lj.push_back(number_or_null(v));
      j[kind == 0 ? "prompt_layer_edit_norm" : "generated_layer_edit_norm"] = lj;
      if (heads) {
        nlohmann::json hj = nlohmann::json::array();
        for (size_t i = 0; i < e.layers.size(); ++i) {
          nlohmann::json row = nlohmann::json::array();
          for (int64_t h = 0; h < e.heads; ++h)
            row.push_back(number_or_null(head[i * size_t(e.heads) + size_t(h)]));
          hj.push_back(row);
        }
        j[kind == 0 ? "prompt_head_edit_norm" : "generated_head_edit_norm"] = hj;
      }
    }
    out.push_back(j);
  }
  return out;
}

}  // namespace destein

// GPT-2 training from scratch: a differentiable forward written with ATen ops on
// parameters that carry Hugging Face names, hand-written AdamW (its state is two tensors
// per parameter, saved with each checkpoint), and a trainer whose batches depend only on
// (seed, step), which is what makes resume exact.
#include "train/lm_training.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "check.hpp"
#include "destein/runtime/checkpoint.hpp"
#include "fnv1a.hpp"
#include "io/file_io.hpp"
#include "io/safetensors.hpp"
#include "splitmix.hpp"

namespace destein {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kStateFormat = "destein-lm-train-state";
constexpr int kStateVersion = 1;

std::string layer_prefix(int64_t layer) { return fmt::format("transformer.h.{}.", layer); }

// Every parameter: name, shape, and how GPT-2 initialises it.
enum class Init { kNormal, kResidualNormal, kZeros, kOnes };
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  Init init;
};

std::vector<ParamSpec> param_specs(const GptShape& s) {
  const int64_t d = s.d_model, f = s.ff();
  std::vector<ParamSpec> specs = {{"transformer.wte.weight", {s.vocab_size, d}, Init::kNormal},
                                  {"transformer.wpe.weight", {s.context, d}, Init::kNormal}};
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const std::string p = layer_prefix(l);
    specs.push_back({p + "ln_1.weight", {d}, Init::kOnes});
    specs.push_back({p + "ln_1.bias", {d}, Init::kZeros});
    specs.push_back({p + "attn.c_attn.weight", {d, 3 * d}, Init::kNormal});
    specs.push_back({p + "attn.c_attn.bias", {3 * d}, Init::kZeros});
    specs.push_back({p + "attn.c_proj.weight", {d, d}, Init::kResidualNormal});
    specs.push_back({p + "attn.c_proj.bias", {d}, Init::kZeros});
    specs.push_back({p + "ln_2.weight", {d}, Init::kOnes});
    specs.push_back({p + "ln_2.bias", {d}, Init::kZeros});
    specs.push_back({p + "mlp.c_fc.weight", {d, f}, Init::kNormal});
    specs.push_back({p + "mlp.c_fc.bias", {f}, Init::kZeros});
    specs.push_back({p + "mlp.c_proj.weight", {f, d}, Init::kResidualNormal});
    specs.push_back({p + "mlp.c_proj.bias", {d}, Init::kZeros});
  }
  specs.push_back({"transformer.ln_f.weight", {d}, Init::kOnes});
  specs.push_back({"transformer.ln_f.bias", {d}, Init::kZeros});
  return specs;
}

void check_shape(const GptShape& s) {
  DESTEIN_CHECK_ARG(
      s.vocab_size > 0 && s.context > 0 && s.d_model > 0 && s.n_layers > 0 && s.n_heads > 0,
      "GPT shape: vocab_size, context, d_model, n_layers and n_heads must be positive");
  DESTEIN_CHECK_ARG(s.d_model % s.n_heads == 0,
                    "GPT shape: d_model {} is not divisible by n_heads {}", s.d_model, s.n_heads);
}

// Linear layer with a Conv1D (in, out) weight: x @ w + b over the last dimension.
at::Tensor conv1d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const auto sizes = x.sizes().vec();
  at::Tensor y = at::addmm(b, x.reshape({-1, sizes.back()}), w);
  std::vector<int64_t> out(sizes.begin(), sizes.end() - 1);
  out.push_back(w.size(1));
  return y.view(out);
}

// Checkpoint folders are "step-00001234"; a ".tmp" one is an interrupted write.
std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  if (!fs::is_directory(dir)) return found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0 || name.find('.') != std::string::npos)
      continue;
    if (!fs::is_regular_file(entry.path() / "state.json")) continue;
    try {
      found.emplace_back(std::stoll(name.substr(5)), entry.path());
    } catch (const std::exception&) {
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

json gpt2_hf_config(const GptShape& s, std::optional<int64_t> bos, std::optional<int64_t> eos) {
  check_shape(s);
  json c = {{"model_type", "gpt2"},
            {"architectures", {"GPT2LMHeadModel"}},
            {"vocab_size", s.vocab_size},
            {"n_positions", s.context},
            {"n_ctx", s.context},
            {"n_embd", s.d_model},
            {"n_layer", s.n_layers},
            {"n_head", s.n_heads},
            {"n_inner", s.ff()},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", s.norm_eps},
            {"tie_word_embeddings", true},
            {"initializer_range", 0.02}};
  if (bos) c["bos_token_id"] = *bos;
  if (eos) c["eos_token_id"] = *eos;
  return c;
}

Gpt2Trainable::Gpt2Trainable(const GptShape& shape, uint64_t seed) : shape_(shape) {
  check_shape(shape);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(shape.n_layers));
  for (const auto& spec : param_specs(shape)) {
    at::Tensor t;
    switch (spec.init) {
      case Init::kNormal:
        t = at::normal(0.0, 0.02, spec.shape, gen, at::kFloat);
        break;
      case Init::kResidualNormal:
        t = at::normal(0.0, residual_std, spec.shape, gen, at::kFloat);
        break;
      case Init::kZeros:
        t = at::zeros(spec.shape, at::kFloat);
        break;
      case Init::kOnes:
        t = at::ones(spec.shape, at::kFloat);
        break;
    }
    t.set_requires_grad(true);
    params_[spec.name] = t;
  }
}

Gpt2Trainable::Gpt2Trainable(const GptShape& shape,
                             const std::map<std::string, at::Tensor>& tensors)
    : shape_(shape) {
  check_shape(shape);
  for (const auto& spec : param_specs(shape)) {
    auto it = tensors.find(spec.name);
    DESTEIN_CHECK_IO(it != tensors.end(), "GPT-2 parameter '{}' is missing", spec.name);
    DESTEIN_CHECK_IO(it->second.sizes().vec() == spec.shape,
                     "GPT-2 parameter '{}': expected shape {}, found {}", spec.name,
                     fmt::join(spec.shape, "x"), fmt::join(it->second.sizes().vec(), "x"));
    at::Tensor t = it->second.detach().to(at::kFloat).clone();
    t.set_requires_grad(true);
    params_[spec.name] = t;
  }
}

const at::Tensor& Gpt2Trainable::p(const std::string& name) const { return params_.at(name); }

int64_t Gpt2Trainable::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

at::Tensor Gpt2Trainable::logits(const at::Tensor& ids) const {
  DESTEIN_CHECK_ARG(ids.dim() == 2, "GPT-2 input ids must be (batch, time), found {} dimensions",
                    ids.dim());
  const int64_t B = ids.size(0), T = ids.size(1), d = shape_.d_model, H = shape_.n_heads,
                Dh = d / H;
  DESTEIN_CHECK_ARG(T <= shape_.context, "sequence of {} tokens is longer than the context of {}",
                    T, shape_.context);
  const at::Tensor& wte = p("transformer.wte.weight");
  at::Tensor x = at::embedding(wte, ids) + p("transformer.wpe.weight").narrow(0, 0, T);
  // Positions above the diagonal are the future: masked before the softmax.
  const at::Tensor future = at::ones({T, T}, at::kBool).triu(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  for (int64_t l = 0; l < shape_.n_layers; ++l) {
    const std::string lp = layer_prefix(l);
    at::Tensor h =
        at::layer_norm(x, {d}, p(lp + "ln_1.weight"), p(lp + "ln_1.bias"), shape_.norm_eps);
    at::Tensor qkv = conv1d(h, p(lp + "attn.c_attn.weight"), p(lp + "attn.c_attn.bias"));
    auto parts =
        qkv.view({B, T, 3, H, Dh}).permute({2, 0, 3, 1, 4}).unbind(0);  // 3 x (B, H, T, Dh)
    at::Tensor scores = at::matmul(parts[0], parts[1].transpose(-2, -1)).mul(scale);
    at::Tensor attn =
        at::softmax(scores.masked_fill(future, -std::numeric_limits<float>::infinity()), -1);
    at::Tensor z = at::matmul(attn, parts[2]).transpose(1, 2).reshape({B, T, d});
    x = x + conv1d(z, p(lp + "attn.c_proj.weight"), p(lp + "attn.c_proj.bias"));
    h = at::layer_norm(x, {d}, p(lp + "ln_2.weight"), p(lp + "ln_2.bias"), shape_.norm_eps);
    h = at::gelu(conv1d(h, p(lp + "mlp.c_fc.weight"), p(lp + "mlp.c_fc.bias")), "tanh");
    x = x + conv1d(h, p(lp + "mlp.c_proj.weight"), p(lp + "mlp.c_proj.bias"));
  }
  x = at::layer_norm(x, {d}, p("transformer.ln_f.weight"), p("transformer.ln_f.bias"),
                     shape_.norm_eps);
  return at::matmul(x, wte.t());
}

at::Tensor Gpt2Trainable::loss(const at::Tensor& window) const {
  DESTEIN_CHECK_ARG(window.dim() == 2 && window.size(1) >= 2,
                    "training windows must be (batch, time + 1) with time >= 1");
  const int64_t T = window.size(1) - 1;
  at::Tensor logits = this->logits(window.narrow(1, 0, T));
  at::Tensor targets = window.narrow(1, 1, T);
  return at::cross_entropy_loss(logits.reshape({-1, shape_.vocab_size}), targets.reshape({-1}), {},
                                at::Reduction::Mean);
}

double scheduled_learning_rate(const OptimizerOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    return o.learning_rate * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  const int64_t decay_steps = o.total_steps - o.warmup_steps;
  if (decay_steps <= 0 || step >= o.total_steps) return o.min_learning_rate;
  const double progress =
      static_cast<double>(step - o.warmup_steps) / static_cast<double>(decay_steps);
  return o.min_learning_rate +
         0.5 * (o.learning_rate - o.min_learning_rate) * (1.0 + std::cos(M_PI * progress));
}

double AdamW::step(std::map<std::string, at::Tensor>& params, int64_t step) {
  at::NoGradGuard no_grad;
  double sum_sq = 0;
  for (auto& [name, t] : params) {
    if (t.grad().defined()) sum_sq += t.grad().pow(2).sum().item<double>();
  }
  const double norm = std::sqrt(sum_sq);
  DESTEIN_CHECK_IO(std::isfinite(norm),
                   "gradient norm is {} at step {}: training diverged (lower the learning rate or "
                   "raise warmup_steps, then resume from the last checkpoint)",
                   norm, step);
  const double clip = options_.grad_clip > 0 && norm > options_.grad_clip
                          ? options_.grad_clip / (norm + 1e-6)
                          : 1.0;
  const double lr = scheduled_learning_rate(options_, step);
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double t = static_cast<double>(step + 1);
  const double bias1 = 1.0 - std::pow(b1, t), bias2 = 1.0 - std::pow(b2, t);
  for (auto& [name, param] : params) {
    at::Tensor grad = param.grad();
    if (!grad.defined()) continue;
    if (clip != 1.0) grad.mul_(clip);
    at::Tensor& m = exp_avg_[name];
    at::Tensor& v = exp_avg_sq_[name];
    if (!m.defined()) {
      m = at::zeros_like(param);
      v = at::zeros_like(param);
    }
    // Decoupled decay on matrices and embeddings; biases and LayerNorms are not decayed.
    if (param.dim() >= 2 && options_.weight_decay > 0) param.mul_(1.0 - lr * options_.weight_decay);
    m.mul_(b1).add_(grad, 1.0 - b1);
    v.mul_(b2).addcmul_(grad, grad, 1.0 - b2);
    at::Tensor denom = (v / bias2).sqrt_().add_(options_.eps);
    param.addcdiv_(m, denom, -lr / bias1);
    param.mutable_grad() = at::Tensor();
  }
  return norm;
}

std::map<std::string, at::Tensor> AdamW::state() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : exp_avg_) out["exp_avg." + name] = t;
  for (const auto& [name, t] : exp_avg_sq_) out["exp_avg_sq." + name] = t;
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state,
                       const std::map<std::string, at::Tensor>& params) {
  exp_avg_.clear();
  exp_avg_sq_.clear();
  for (const auto& [name, param] : params) {
    for (auto [prefix, target] :
         {std::pair{"exp_avg.", &exp_avg_}, std::pair{"exp_avg_sq.", &exp_avg_sq_}}) {
      auto it = state.find(prefix + name);
      DESTEIN_CHECK_IO(it != state.end(), "optimizer state has no '{}{}'", prefix, name);
      DESTEIN_CHECK_IO(it->second.sizes() == param.sizes(),
                       "optimizer state '{}{}' has shape {}, the parameter {}", prefix, name,
                       fmt::join(it->second.sizes().vec(), "x"),
                       fmt::join(param.sizes().vec(), "x"));
      (*target)[name] = it->second.to(at::kFloat).clone();
    }
  }
}

json LmTrainOptions::to_json() const {
  const auto& o = optimizer;
  json j = {{"shape",
             {{"vocab_size", shape.vocab_size},
              {"context", shape.context},
              {"d_model", shape.d_model},
              {"n_layers", shape.n_layers},
              {"n_heads", shape.n_heads},
              {"d_ff", shape.ff()},
              {"norm_eps", shape.norm_eps}}},
            {"optimizer",
             {{"learning_rate", o.learning_rate},
              {"min_learning_rate", o.min_learning_rate},
              {"warmup_steps", o.warmup_steps},
              {"total_steps", o.total_steps},
              {"weight_decay", o.weight_decay},
              {"beta1", o.beta1},
              {"beta2", o.beta2},
              {"eps", o.eps},
              {"grad_clip", o.grad_clip}}},
            {"batch_size", batch_size},
            {"seed", seed},
            {"eval_tokens", eval_tokens}};
  // Only when fine-tuning, so that checkpoints of runs from scratch still resume.
  if (!initial_weights_identity.is_null()) j["initial_weights"] = initial_weights_identity;
  return j;
}

LmTrainer::LmTrainer(LmTrainOptions options, std::vector<int32_t> train_tokens,
                     std::vector<int32_t> heldout_tokens, fs::path checkpoint_dir)
    : options_(std::move(options)),
      train_(std::move(train_tokens)),
      heldout_(std::move(heldout_tokens)),
      checkpoint_dir_(std::move(checkpoint_dir)),
      model_(options_.initial_weights.empty()
                 ? Gpt2Trainable(options_.shape, options_.seed)
                 : Gpt2Trainable(options_.shape, options_.initial_weights)),
      optimizer_(options_.optimizer) {
  const int64_t window = options_.shape.context + 1;
  DESTEIN_CHECK_ARG(
      static_cast<int64_t>(train_.size()) > window,
      "training stream has {} tokens: it needs more than one window of {} (context + 1)",
      train_.size(), window);
  DESTEIN_CHECK_ARG(
      static_cast<int64_t>(heldout_.size()) >= window,
      "held-out stream has {} tokens: it needs at least one window of {} (context + 1)",
      heldout_.size(), window);
  DESTEIN_CHECK_ARG(options_.batch_size > 0 && options_.optimizer.total_steps > 0,
                    "batch_size and steps must be positive");
  for (const auto* stream : {&train_, &heldout_}) {
    for (int32_t id : *stream) {
      DESTEIN_CHECK_ARG(id >= 0 && id < options_.shape.vocab_size,
                        "token id {} is outside the vocabulary of {}", id,
                        options_.shape.vocab_size);
    }
  }
  data_fingerprint_ = detail::fnv1a64(train_.data(), train_.size() * sizeof(int32_t));
  data_fingerprint_ =
      detail::fnv1a64(heldout_.data(), heldout_.size() * sizeof(int32_t), data_fingerprint_);
}

at::Tensor LmTrainer::sample_batch(int64_t step) const {
  const int64_t B = options_.batch_size, W = options_.shape.context + 1;
  const uint64_t starts = static_cast<uint64_t>(train_.size()) - static_cast<uint64_t>(W) + 1;
  detail::SplitMix64 rng(detail::splitmix64(options_.seed) ^
                         detail::splitmix64(static_cast<uint64_t>(step) + 1));
  at::Tensor batch = at::empty({B, W}, at::kLong);
  int64_t* out = batch.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const size_t start = static_cast<size_t>(rng.below(starts));
    for (int64_t i = 0; i < W; ++i) out[b * W + i] = train_[start + static_cast<size_t>(i)];
  }
  return batch;
}

double mean_heldout_loss(const Gpt2Trainable& model, const std::vector<int32_t>& tokens,
                         int64_t batch_size, int64_t max_tokens) {
  at::NoGradGuard no_grad;
  const int64_t T = model.shape().context, W = T + 1;
  DESTEIN_CHECK_ARG(static_cast<int64_t>(tokens.size()) >= W && batch_size > 0,
                    "held-out loss needs at least one window of {} tokens, found {}", W,
                    tokens.size());
  std::vector<int64_t> starts;
  for (int64_t s = 0; s + W <= static_cast<int64_t>(tokens.size()); s += T) {
    if (max_tokens > 0 && static_cast<int64_t>(starts.size()) * T >= max_tokens) break;
    starts.push_back(s);
  }
  double total = 0;
  for (size_t first = 0; first < starts.size(); first += static_cast<size_t>(batch_size)) {
    const int64_t n = std::min<int64_t>(batch_size, static_cast<int64_t>(starts.size() - first));
    at::Tensor batch = at::empty({n, W}, at::kLong);
    int64_t* out = batch.data_ptr<int64_t>();
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t i = 0; i < W; ++i)
        out[b * W + i] = tokens[static_cast<size_t>(starts[first + b] + i)];
    }
    total += model.loss(batch).item<double>() * static_cast<double>(n);
  }
  return total / static_cast<double>(starts.size());
}

double LmTrainer::heldout_loss() const {
  return mean_heldout_loss(model_, heldout_, options_.batch_size, options_.eval_tokens);
}

json LmTrainer::state_json() const {
  json curve = json::array();
  for (const auto& [s, l] : heldout_curve_) curve.push_back({s, l});
  return {{"format", kStateFormat},
          {"version", kStateVersion},
          {"step", step_},
          {"tokens_seen", tokens_seen_},
          {"train_seconds", train_seconds_},
          {"heldout_curve", curve},
          {"data_fingerprint", fmt::format("{:016x}", data_fingerprint_)},
          {"train_tokens", train_.size()},
          {"heldout_tokens", heldout_.size()},
          {"options", options_.to_json()}};
}

fs::path LmTrainer::save_checkpoint_now() {
  fs::create_directories(checkpoint_dir_);
  const fs::path final_dir = checkpoint_dir_ / fmt::format("step-{:08d}", step_);
  const fs::path tmp = checkpoint_dir_ / fmt::format("step-{:08d}.tmp", step_);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  {
    at::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> weights;
    for (const auto& [name, t] : model_.parameters()) weights[name] = t.detach();
    save_checkpoint(tmp / "model.pt", gpt2_hf_config(options_.shape, std::nullopt, std::nullopt),
                    weights);
    write_safetensors(tmp / "optimizer.safetensors", optimizer_.state(),
                      {{"format", kStateFormat}});
  }
  // state.json last: a folder without it is an interrupted write and is never resumed from.
  write_text_file(tmp / "state.json", state_json().dump(2) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  auto existing = list_checkpoints(checkpoint_dir_);
  const int64_t keep = std::max<int64_t>(1, options_.keep_checkpoints);
  for (size_t i = 0; i + static_cast<size_t>(keep) < existing.size(); ++i)
    fs::remove_all(existing[i].second);
  return final_dir;
}

int64_t LmTrainer::resume() {
  auto existing = list_checkpoints(checkpoint_dir_);
  if (existing.empty()) return 0;
  const fs::path dir = existing.back().second;
  const fs::path state_path = dir / "state.json";
  const json state = read_json_file(state_path);
  DESTEIN_CHECK_IO(state.value("format", "") == kStateFormat, "{}: not a destein training state",
                   state_path.string());
  if (auto diff = first_json_difference(options_.to_json(), state.at("options"))) {
    throw std::runtime_error(
        fmt::format("cannot resume from {}: its training options differ from these ({}). Restore "
                    "the options, or "
                    "train into a new output folder",
                    dir.string(), *diff));
  }
  DESTEIN_CHECK_IO(
      state.at("data_fingerprint").get<std::string>() == fmt::format("{:016x}", data_fingerprint_),
      "cannot resume from {}: it was trained on other token streams ({} / {} tokens there, {} / {} "
      "now); train into a new output folder",
      dir.string(), state.at("train_tokens").get<int64_t>(),
      state.at("heldout_tokens").get<int64_t>(), train_.size(), heldout_.size());
  Checkpoint ckpt = load_checkpoint(dir / "model.pt");
  model_ = Gpt2Trainable(options_.shape, ckpt.tensors);
  optimizer_.load_state(read_safetensors(dir / "optimizer.safetensors").tensors,
                        model_.parameters());
  step_ = state.at("step").get<int64_t>();
  tokens_seen_ = state.at("tokens_seen").get<int64_t>();
  train_seconds_ = state.at("train_seconds").get<double>();
  heldout_curve_.clear();
  for (const auto& point : state.at("heldout_curve")) {
    heldout_curve_.emplace_back(point.at(0).get<int64_t>(), point.at(1).get<double>());
  }
  return step_;
}

LmTrainResult LmTrainer::train(const std::function<void(const TrainProgress&)>& on_progress,
                               int64_t stop_after, const std::function<bool()>& stop_requested) {
  using clock = std::chrono::steady_clock;
  at::AutoGradMode grad_on(true);
  LmTrainResult result;
  result.resumed_at = step_;
  const int64_t total = options_.optimizer.total_steps;
  const int64_t tokens_per_step = options_.batch_size * options_.shape.context;
  double run_seconds = 0, loss_sum = 0;
  int64_t loss_count = 0, run_steps = 0;
  while (step_ < total && (stop_after <= 0 || run_steps < stop_after)) {
    const auto t0 = clock::now();
    at::Tensor loss = model_.loss(sample_batch(step_));
    loss.backward();
    const double lr = scheduled_learning_rate(options_.optimizer, step_);
    const double norm = optimizer_.step(model_.parameters(), step_);
    const double loss_value = loss.item<double>();
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    DESTEIN_CHECK_IO(std::isfinite(loss_value), "training loss is {} at step {}: training diverged",
                     loss_value, step_);
    ++step_;
    ++run_steps;
    tokens_seen_ += tokens_per_step;
    run_seconds += dt;
    train_seconds_ += dt;
    loss_sum += loss_value;
    ++loss_count;

    TrainProgress progress;
    if (stop_requested && step_ < total && stop_requested()) result.stopped = true;
    const bool last =
        step_ == total || (stop_after > 0 && run_steps == stop_after) || result.stopped;
    if ((options_.eval_every > 0 && step_ % options_.eval_every == 0) || step_ == total) {
      progress.heldout_loss = heldout_loss();
      heldout_curve_.emplace_back(step_, *progress.heldout_loss);
    }
    if ((options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0) || last) {
      progress.checkpoint = save_checkpoint_now();
    }
    if (on_progress && (step_ % std::max<int64_t>(1, options_.log_every) == 0 || last ||
                        progress.heldout_loss || progress.checkpoint)) {
      progress.step = step_;
      progress.total_steps = total;
      progress.loss = loss_sum / static_cast<double>(loss_count);
      progress.learning_rate = lr;
      progress.grad_norm = norm;
      progress.tokens_per_second = static_cast<double>(run_steps * tokens_per_step) / run_seconds;
      on_progress(progress);
      loss_sum = 0;
      loss_count = 0;
    }
    if (result.stopped) break;
  }
  result.steps = step_;
  result.tokens_seen = tokens_seen_;
  result.seconds = run_seconds;
  result.train_seconds_total = train_seconds_;
  result.tokens_per_second =
      run_steps > 0 ? static_cast<double>(run_steps * tokens_per_step) / run_seconds : 0.0;
  result.heldout_curve = heldout_curve_;
  result.final_heldout_loss =
      heldout_curve_.empty() ? heldout_loss() : heldout_curve_.back().second;
  return result;
}

}  // namespace destein

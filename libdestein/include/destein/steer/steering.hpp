#pragma once
/// Inference-time steering: DeStein's directions blended into the attention outputs,
/// norm-preserving, at the positions a window selects, optionally gated by the per-head
/// probes, composable (several entries in order) and per row (rows of one batch steered
/// differently, or not at all).
///
///   auto model = destein::load_model("exported/gpt2-large");
///   auto vectors = destein::load_steering_vectors("runs/gpt2-large/vectors.safetensors");
///   destein::Hooks hooks;
///   destein::SteeringOptions steer;
///   steer.mode = destein::SteeringMode::kHeadwise;
///   steer.alpha = 0.4;
///   destein::SteeringHandle handle = destein::attach_steering(hooks, *model, vectors, steer);
///   auto generations = destein::generate(*model, prompts, options, &hooks);
///   destein::SteeringReport acted = handle.report();  // mean edit norms, prompt vs generated
///   handle.remove();   // detach (also on destruction)
///
/// Per-row steering (a server batching requests with different steering):
///
///   destein::SteeringController control(hooks, model->config(), model->device());
///   auto a = destein::make_steering_plan(*model, vectors, steer);
///   control.set_rows({{a}, {}, {a, b}});   // row 0: a; row 1: unsteered; row 2: a then b
///   model->forward(ids, fo);               // (3, T); change set_rows() between calls
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>

#include <nlohmann/json.hpp>
#include <set>
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

/// Which positions an entry edits. A position is a *prompt* position when the forward call
/// that processes it starts from an empty cache (HookContext::past_length == 0: the prompt
/// pass of generate(), or any forward without a cache), and a *generated* position when it
/// is appended to a cache (the decode steps). SteeringController::set_generated_from()
/// replaces this rule per row by a timeline column.
enum class SteeringPositions {
  kAll,        ///< every position (the paper)
  kPrompt,     ///< prompt positions only
  kGenerated,  ///< generated positions only: the prompt pass runs unsteered, so the first
               ///< new token is drawn from the base model's distribution
};

/// "all" / "prompt" / "generated". Throws std::invalid_argument otherwise.
SteeringPositions parse_steering_positions(const std::string& name);
std::string steering_positions_name(SteeringPositions positions);

/// Whether an entry's edit is scaled by the probe of each head.
enum class SteeringGate {
  kNone,  ///< the edit as the formulas give it
  /// Per position and head h: g = sigmoid(w_h . ((x_h - mean_h) / scale_h) + b_h), the
  /// toxic probability of the head's probe (SteeringVectors::probe_*) on the head slice x_h
  /// of the activation this entry receives at that position; the edited slice becomes
  /// x_h + g (x'_h - x_h). With gate_threshold > 0 the gate is hard: g = 1 when
  /// p >= threshold, else 0 (x'_h or x_h exactly).
  kProbe,
};

/// "none" / "probe". Throws std::invalid_argument otherwise.
SteeringGate parse_steering_gate(const std::string& name);
std::string steering_gate_name(SteeringGate gate);

struct SteeringOptions {
  SteeringMode mode = SteeringMode::kReference;
  double alpha = 0.4;
  int64_t layer_start = 0;  ///< first steered layer
  int64_t layer_end = -1;   ///< one past the last steered layer; -1: all layers
  int64_t top_k_heads = 0;  ///< headwise: keep only the K most accurate heads (0: all)
  SteeringPositions positions = SteeringPositions::kAll;
  SteeringGate gate = SteeringGate::kNone;
  /// kProbe only: 0 = soft gate (scale by the probability); in (0, 1): hard gate.
  double gate_threshold = 0;
};

/// The per-layer quantities both paths use, precomputed once.
class SteeringPlan {
 public:
  /// Throws std::invalid_argument when the vectors do not match the model, options are out
  /// of range, a steered layer's direction is zero, headwise mode leaves no head with a
  /// positive weight, or gate kProbe is asked of vectors without stored probes.
  SteeringPlan(const SteeringVectors& vectors, const ModelConfig& config,
               const SteeringOptions& options);

  /// Applies the intervention of `layer` (gate included) to an activation at the vectors'
  /// site: (B, T, d) for attn_out or (B, T, H, Dh) for hook_z. `edit_mask` (B, T) bool on
  /// the activation's device selects the positions edited (undefined: all); the others
  /// come back bit for bit. The position window is not applied here: SteeringController
  /// turns it into `edit_mask`. Vectorised fast path.
  at::Tensor apply(int64_t layer, const at::Tensor& activation,
                   const at::Tensor& edit_mask = {}) const;

  /// The same formulas, one position and one head at a time in double precision: the
  /// oracle the fast path is tested against.
  at::Tensor apply_naive(int64_t layer, const at::Tensor& activation,
                         const at::Tensor& edit_mask = {}) const;

  /// kProbe: the gate g of every position and head, (B, T, H) f32, for an activation at the
  /// site ((B, T, d) or (B, T, H, Dh)); soft or hard as the options say. Throws
  /// std::logic_error for a plan without a probe gate.
  at::Tensor gate(int64_t layer, const at::Tensor& activation) const;

  /// Moves the precomputed directions to `device` (attach_steering does this for the model).
  void to(c10::Device device);

  bool steers(int64_t layer) const;
  const SteeringOptions& options() const { return options_; }
  SteeringSite site() const { return site_; }
  /// (H) headwise weights of `layer` (all layers share the normalisation).
  at::Tensor head_weights(int64_t layer) const;

 private:
  struct Tensors;  // the precomputed directions, weights and probes (steering.cpp)
  SteeringOptions options_;
  SteeringSite site_;
  std::shared_ptr<Tensors> t_;  // shared by copies until one moves to another device
};

/// Entries applied in order at each hook point (composition). A hook_z entry acts before
/// the attention's output projection, an attn_out entry after it, whatever their order.
using SteeringStack = std::vector<std::shared_ptr<const SteeringPlan>>;

/// A plan on the model's device, ready for a SteeringController.
std::shared_ptr<const SteeringPlan> make_steering_plan(const Model& model,
                                                       const SteeringVectors& vectors,
                                                       const SteeringOptions& options);

/// Proof that steering acted: per entry, the mean L2 norm of the edit x' - x at the site,
/// per layer (the whole site vector) and per head (its Dh slice), over the real (unpadded)
/// positions that passed the entry's hooks, separately for prompt and generated positions.
struct SteeringReport {
  struct Entry {
    std::string label;  ///< "entry 0 (reference, alpha 0.4, positions all, gate none)"
    SteeringMode mode = SteeringMode::kReference;
    SteeringPositions positions = SteeringPositions::kAll;
    std::vector<int64_t> layers;  ///< the steered layers, in order
    /// Mean edit norms, one value per steered layer ([i] for layers[i]); NaN when no
    /// position of that kind passed the layer.
    std::vector<double> prompt_layer_mean, generated_layer_mean;
    /// (steered layers, H) per-head mean edit norms, row-major.
    std::vector<double> prompt_head_mean, generated_head_mean;
    int64_t heads = 0;
    /// Real positions of each kind that passed the first steered layer.
    int64_t prompt_positions = 0, generated_positions = 0;
    /// True when the window includes generated positions, some passed, and none of them
    /// was edited at any layer (a steering that silently did nothing while decoding).
    bool generated_not_edited = false;
  };
  std::vector<Entry> entries;
  /// One line per flagged entry; empty when every entry acted where its window says.
  std::vector<std::string> warnings() const;
};

/// Steering for one run, row by row: registers one edit hook per (layer, site) its plans
/// need and applies, to each row of each forward call, that row's stack. The assignment can
/// change between forward calls (rows joining and leaving a batch between decode steps
/// under a KV cache): edits only touch the positions of the current call, and the cache
/// keeps what earlier calls computed. Rows without entries are returned bit for bit, so an
/// unsteered row equals an unsteered batch. Keeps edit statistics (report()).
/// Not thread-safe: one forward at a time, as for Hooks.
class SteeringController {
 public:
  /// `hooks` must outlive the controller's set_*() calls; its hooks are removed on
  /// remove() or destruction.
  SteeringController(Hooks& hooks, const ModelConfig& config, c10::Device device);
  ~SteeringController();
  SteeringController(const SteeringController&) = delete;
  SteeringController& operator=(const SteeringController&) = delete;

  /// Every row of every forward call gets `stack` (whatever the batch size).
  void set_uniform(SteeringStack stack);
  /// Row b of the next forward calls gets rows[b] (empty: unsteered). A forward call with
  /// another batch size throws std::invalid_argument from the hook.
  void set_rows(std::vector<SteeringStack> rows);
  /// Per row: the timeline column (past_length + t) from which positions count as
  /// generated; -1 keeps the default rule (see SteeringPositions). Empty: default for all.
  void set_generated_from(std::vector<int64_t> columns);

  /// Edit statistics of every plan seen since construction or reset_stats(), in the order
  /// the plans were first set.
  SteeringReport report() const;
  /// The same for the plans of `stack` only, numbered from entry 0 as if they were the
  /// controller's only plans: one method's view when several share the controller.
  SteeringReport report(const SteeringStack& stack) const;
  void reset_stats();
  /// Unregisters the hooks (forward calls then run unsteered).
  void remove();
  bool active() const;

 private:
  struct State;
  void ensure_hooks(const SteeringStack& stack);
  SteeringReport report_of(const SteeringStack* only) const;
  Hooks* hooks_;
  std::shared_ptr<State> state_;
  std::vector<HookHandle> handles_;
  std::set<std::pair<int64_t, int>> registered_;  // (layer, HookSite) with a hook
};

/// Removes the steering hooks on remove() or destruction. Its report() covers its own
/// stack's plans, so several handles on one controller (methods steering different rows
/// of one batch) each report their method alone.
class SteeringHandle {
 public:
  SteeringHandle() = default;
  SteeringHandle(std::shared_ptr<SteeringController> controller, SteeringStack stack);
  SteeringHandle(SteeringHandle&&) noexcept = default;
  SteeringHandle& operator=(SteeringHandle&&) noexcept = default;
  SteeringHandle(const SteeringHandle&) = delete;
  SteeringHandle& operator=(const SteeringHandle&) = delete;
  void remove();
  bool active() const;
  /// The first entry's plan (null for an empty handle).
  const SteeringPlan* plan() const { return stack_.empty() ? nullptr : stack_.front().get(); }
  const SteeringStack& stack() const { return stack_; }
  /// What the steering of this handle's stack did so far (empty entries when nothing is
  /// attached).
  SteeringReport report() const;
  /// Starts the edit statistics afresh (e.g. per prompt set), the controller's whole.
  void reset_stats();

 private:
  std::shared_ptr<SteeringController> controller_;
  SteeringStack stack_;
};

/// Registers the steering edits on `hooks` for every steered layer. alpha = 0 registers
/// nothing, so it is an exact no-op (bit-identical logits).
SteeringHandle attach_steering(Hooks& hooks, const Model& model, const SteeringVectors& vectors,
                               const SteeringOptions& options);

/// Composition: the plans of `stack` (from make_steering_plan) applied in order on every
/// row. Entries with alpha 0 register nothing.
SteeringHandle attach_steering(Hooks& hooks, const Model& model, SteeringStack stack);

/// The plan of one steering entry from a vectors file: load_steering_vectors(),
/// check_vectors_match_model() and make_steering_plan(), every error prefixed with `path`.
std::shared_ptr<const SteeringPlan> load_steering_plan(const std::string& path,
                                                       const SteeringOptions& options,
                                                       const Model& model);

/// The acted report as JSON: per entry its label, steered layers, position counts, mean
/// edit norms per layer for prompt and generated positions (null where no position
/// passed), per head (L x H nested arrays) when `heads`, and `generated_not_edited`.
nlohmann::json steering_report_json(const SteeringReport& report, bool heads);

}  // namespace destein

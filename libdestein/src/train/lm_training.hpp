#pragma once
/// Training a GPT-2-architecture language model from scratch with LibTorch: the model
/// with Hugging Face parameter names (so save_checkpoint() writes what load_model()
/// reads), AdamW with warmup + cosine decay and gradient clipping, periodic checkpoints
/// and exact resume.
///
///     destein::LmTrainOptions opts;                 // 4 layers, d 256, context 128 ...
///     destein::LmTrainer trainer(opts, train_ids, heldout_ids, "runs/lm/checkpoints");
///     trainer.resume();                             // continues a killed run, if any
///     auto result = trainer.train([](const destein::TrainProgress& p) { ... });
///     destein::save_checkpoint("model.pt", destein::gpt2_hf_config(opts.shape, 1, 2),
///                              trainer.model().parameters());

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace destein {

/// Dimensions of a GPT-2 model.
struct GptShape {
  int64_t vocab_size = 8000;
  int64_t context = 128;  ///< positions (n_positions)
  int64_t d_model = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 8;
  int64_t d_ff = 0;  ///< 0: 4 * d_model
  double norm_eps = 1e-5;

  int64_t ff() const { return d_ff > 0 ? d_ff : 4 * d_model; }
};

/// The Hugging Face config.json of a GPT-2 model of this shape (gelu_new, tied head).
nlohmann::json gpt2_hf_config(const GptShape& shape, std::optional<int64_t> bos_token_id,
                              std::optional<int64_t> eos_token_id);

/// A GPT-2 whose parameters require gradients. Parameter names and layouts are Hugging
/// Face's (`transformer.h.0.attn.c_attn.weight` is (d, 3d), as Conv1D stores it).
class Gpt2Trainable {
 public:
  /// GPT-2's initialisation: N(0, 0.02) weights, residual projections scaled by
  /// 1/sqrt(2 * n_layers), zero biases, unit LayerNorms; `seed` fixes every draw.
  Gpt2Trainable(const GptShape& shape, uint64_t seed);
  /// From stored tensors (converted to float32, copied). Throws std::runtime_error naming
  /// a missing or misshaped parameter.
  Gpt2Trainable(const GptShape& shape, const std::map<std::string, at::Tensor>& tensors);

  /// (B, T) ids -> (B, T, V) float32 logits, T <= context.
  at::Tensor logits(const at::Tensor& input_ids) const;
  /// Mean next-token cross-entropy of (B, T + 1) ids: positions 0..T-1 predict 1..T.
  at::Tensor loss(const at::Tensor& window_ids) const;

  std::map<std::string, at::Tensor>& parameters() { return params_; }
  const std::map<std::string, at::Tensor>& parameters() const { return params_; }
  int64_t parameter_count() const;
  const GptShape& shape() const { return shape_; }

 private:
  const at::Tensor& p(const std::string& name) const;
  GptShape shape_;
  std::map<std::string, at::Tensor> params_;
};

/// Mean next-token loss (nats) of `model` over `tokens`, cut into non-overlapping windows
/// of context + 1 tokens (each window predicts context tokens), at most `max_tokens`
/// predicted tokens (0: all), `batch_size` windows per forward.
double mean_heldout_loss(const Gpt2Trainable& model, const std::vector<int32_t>& tokens,
                         int64_t batch_size, int64_t max_tokens);

struct OptimizerOptions {
  double learning_rate = 1e-3;      ///< peak, reached after warmup
  double min_learning_rate = 1e-4;  ///< end of the cosine decay
  int64_t warmup_steps = 200;
  int64_t total_steps = 3000;
  double weight_decay = 0.1;  ///< decoupled; matrices and embeddings only
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  ///< max global L2 norm of the gradient; <= 0: off
};

/// Learning rate of 0-based `step`: linear warmup from lr/warmup to lr, then cosine decay
/// to min_learning_rate at total_steps (and min_learning_rate after).
double scheduled_learning_rate(const OptimizerOptions& options, int64_t step);

/// AdamW (Loshchilov & Hutter) with bias correction, as torch.optim.AdamW computes it.
class AdamW {
 public:
  explicit AdamW(OptimizerOptions options) : options_(options) {}
  /// Clips the gradients in the parameters' .grad() to grad_clip, applies one update at
  /// the scheduled rate of `step` (0-based) and clears the gradients. Returns the global
  /// gradient norm before clipping. Throws std::runtime_error when the norm is not finite.
  double step(std::map<std::string, at::Tensor>& params, int64_t step);

  /// First and second moments, keyed `exp_avg.<name>` / `exp_avg_sq.<name>`.
  std::map<std::string, at::Tensor> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state,
                  const std::map<std::string, at::Tensor>& params);
  const OptimizerOptions& options() const { return options_; }

 private:
  OptimizerOptions options_;
  std::map<std::string, at::Tensor> exp_avg_, exp_avg_sq_;
};

struct LmTrainOptions {
  GptShape shape;
  OptimizerOptions optimizer;
  int64_t batch_size = 16;         ///< windows of context + 1 tokens per step
  uint64_t seed = 0;               ///< initialisation and window sampling
  int64_t eval_every = 250;        ///< held-out loss every N steps (and at the end); 0: end only
  int64_t eval_tokens = 131072;    ///< held-out tokens scored per evaluation (0: all)
  int64_t checkpoint_every = 250;  ///< 0: only at the end
  int64_t keep_checkpoints = 2;
  int64_t log_every = 10;  ///< progress callback period in steps
  /// Fine-tuning: the weights step 0 starts from (empty: GPT-2's initialisation from
  /// `seed`), and what they are (a file identity, kept with the checkpoints so that a
  /// resume from other weights is refused; empty when training from scratch).
  std::map<std::string, at::Tensor> initial_weights;
  nlohmann::json initial_weights_identity;

  /// The options as JSON (stored with checkpoints; resume refuses a mismatch).
  nlohmann::json to_json() const;
};

struct TrainProgress {
  int64_t step = 0;  ///< steps done
  int64_t total_steps = 0;
  double loss = 0;  ///< mean training loss since the last report
  double learning_rate = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;  ///< this run's training throughput so far
  std::optional<double> heldout_loss;
  std::optional<std::filesystem::path> checkpoint;  ///< written at this step
};

struct LmTrainResult {
  int64_t steps = 0;
  int64_t resumed_at = 0;          ///< step the run started from (0: fresh)
  int64_t tokens_seen = 0;         ///< over all runs, resumed ones included
  double seconds = 0;              ///< wall time of this run's steps (evaluations excluded)
  double train_seconds_total = 0;  ///< over all runs
  double tokens_per_second = 0;    ///< this run
  double final_heldout_loss = 0;
  std::vector<std::pair<int64_t, double>> heldout_curve;  ///< (step, loss), all runs
  bool stopped = false;  ///< stop_requested() ended the run early (a checkpoint was written)
};

/// Trains on a token stream (documents joined with BOS/EOS by the caller), drawing
/// `batch_size` random windows of context + 1 tokens per step from a stream seeded by
/// (seed, step), so a resumed run draws exactly the windows an uninterrupted one would.
class LmTrainer {
 public:
  LmTrainer(LmTrainOptions options, std::vector<int32_t> train_tokens,
            std::vector<int32_t> heldout_tokens, std::filesystem::path checkpoint_dir);

  /// Loads the newest complete checkpoint in checkpoint_dir, if any, and returns its step
  /// (0 when there is none). Throws std::runtime_error when it was written with other
  /// options or other data, naming what differs.
  int64_t resume();
  /// Runs the remaining steps. `stop_after` > 0 stops after that many steps of this run
  /// (with a checkpoint), as a killed run would. `stop_requested`, polled after every step,
  /// ends the run the same way when it returns true (result.stopped; e.g. on SIGINT).
  LmTrainResult train(const std::function<void(const TrainProgress&)>& on_progress = {},
                      int64_t stop_after = 0, const std::function<bool()>& stop_requested = {});
  /// Mean next-token loss over the held-out stream (non-overlapping windows).
  double heldout_loss() const;
  /// Writes a checkpoint of the current step into checkpoint_dir and prunes old ones.
  std::filesystem::path save_checkpoint_now();

  Gpt2Trainable& model() { return model_; }
  int64_t step() const { return step_; }
  const LmTrainOptions& options() const { return options_; }

 private:
  at::Tensor sample_batch(int64_t step) const;
  nlohmann::json state_json() const;

  LmTrainOptions options_;
  std::vector<int32_t> train_;
  std::vector<int32_t> heldout_;
  std::filesystem::path checkpoint_dir_;
  Gpt2Trainable model_;
  AdamW optimizer_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  double train_seconds_ = 0;
  std::vector<std::pair<int64_t, double>> heldout_curve_;
  uint64_t data_fingerprint_ = 0;
};

}  // namespace destein

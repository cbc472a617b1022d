#pragma once
/// Native forward passes of decoder-only transformers (GPT-2, LLaMA/Mistral, OPT, MPT) with
/// named hook points and a KV cache.
///
///   auto model = destein::load_model("gpt2-large.pt", {.threads = 0});
///   at::Tensor ids = at::tensor({464, 3290}, at::kLong).unsqueeze(0);   // (1, 2)
///   at::Tensor logits = model->forward(ids).logits;                       // (1, 2, V)

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/hooks.hpp"
#include "destein/runtime/model_config.hpp"

namespace destein {

/// Which kernels run the weight matrix products (and, for kStable, the attention).
enum class LinearBackend {
  kAuto,    ///< kStable on CPU float32, else BLAS
  kBlas,    ///< at::linear (BLAS on CPU, cuBLAS on CUDA) and batched-matmul attention
  kOneDnn,  ///< weights packed for LibTorch's oneDNN (CPU float32 only)
  kStable,  ///< row-stable kernels (CPU float32 only): a row's logits do not depend on the
            ///< other rows of the batch, their number, or the left padding
};

struct ModelOptions {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;  ///< compute dtype; weights are converted on load
  int threads = 0;                      ///< LibTorch intra-op threads; <= 0: all cores
  LinearBackend linear_backend = LinearBackend::kAuto;
};

/// "auto", "blas", "onednn", "stable". Throws std::invalid_argument otherwise.
LinearBackend parse_linear_backend(const std::string& name);
/// The name parse_linear_backend() reads: "auto", "blas", "onednn", "stable".
std::string linear_backend_name(LinearBackend backend);

/// Keys and values of every layer for incremental decoding, preallocated to a capacity.
/// Rows are sequences of a batch; columns are positions of one shared timeline (left
/// padding included), so all rows advance together.
class KVCache {
 public:
  /// Positions already stored.
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t batch_size() const { return batch_; }

  /// Keeps only the rows `rows` (e.g. drop finished sequences). (R) long.
  void select_rows(const at::Tensor& rows);

  /// One cache holding the rows of `parts` in order, `capacity` columns wide: rows of
  /// caches of different lengths on one timeline. Each part is right-aligned on a timeline
  /// as long as the longest part; the columns in front of a shorter part are zeros, to be
  /// masked out as left padding. Parts without rows are skipped. Throws
  /// std::invalid_argument when no part has rows, the parts come from models with different
  /// layer counts, or `capacity` is below the longest part.
  static KVCache stack(const std::vector<const KVCache*>& parts, int64_t capacity);
  /// Drops the first `columns` timeline positions of every row (left padding that every row
  /// shares, e.g. after the longest rows left). Views, no copy: the next stack() compacts.
  void drop_leading_columns(int64_t columns);

 private:
  friend class DecoderModel;
  std::vector<at::Tensor> keys_;    // per layer (B, Hkv, capacity, Dh)
  std::vector<at::Tensor> values_;  // per layer (B, Hkv, capacity, Dh)
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  int64_t batch_ = 0;
};

enum class LogitsFor { kAll, kLast, kNone };

struct ForwardOptions {
  /// (B, past + T) 0/1 over the whole timeline including cached positions; 1 = real token.
  /// Undefined = all ones. Position ids are derived from it (count of real tokens before),
  /// as Hugging Face generate() does for left-padded batches.
  at::Tensor attention_mask;
  KVCache* cache = nullptr;      ///< read and extended when given
  const Hooks* hooks = nullptr;  ///< observed / edited activations
  LogitsFor logits = LogitsFor::kAll;
};

struct ForwardOutput {
  at::Tensor logits;  ///< (B, T, V) f32, or (B, 1, V) for kLast, undefined for kNone
};

/// A loaded model. forward() is const and thread-compatible: run one call at a time per
/// KVCache; several threads may share the model with their own caches and hooks.
class Model {
 public:
  virtual ~Model() = default;

  const ModelConfig& config() const { return config_; }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }
  int64_t parameter_count() const { return parameter_count_; }
  /// The kernels the weight products run on: kStable, kOneDnn or kBlas (never kAuto, which
  /// is resolved at load). linear_backend_name() spells it.
  LinearBackend linear_backend() const { return linear_backend_; }

  /// input_ids (B, T) long. Throws std::invalid_argument for an id outside the vocabulary,
  /// a sequence past the position limit, a mask of the wrong shape, a cache too small, or
  /// a hook naming a layer the model does not have.
  virtual ForwardOutput forward(const at::Tensor& input_ids,
                                const ForwardOptions& options = {}) const = 0;

  /// A cache for `batch` sequences of up to `capacity` positions.
  virtual KVCache make_cache(int64_t batch, int64_t capacity) const = 0;

 protected:
  ModelConfig config_;
  c10::Device device_ = c10::Device(c10::kCPU);
  c10::ScalarType dtype_ = c10::kFloat;
  int64_t parameter_count_ = 0;
  LinearBackend linear_backend_ = LinearBackend::kBlas;
};

/// Builds the native model for `checkpoint.config.model_type` ("gpt2", "llama",
/// "mistral", "opt", "mpt"). Throws std::invalid_argument for an unknown model_type (listing the
/// known ones), std::runtime_error for a missing or wrongly shaped parameter (naming it,
/// expected and found shapes).
std::unique_ptr<Model> build_model(const Checkpoint& checkpoint, const ModelOptions& options = {});

/// load_checkpoint() + build_model().
std::unique_ptr<Model> load_model(const std::filesystem::path& path,
                                  const ModelOptions& options = {});

/// The model types build_model() knows.
std::vector<std::string> known_model_types();

/// Result of comparing our logits with a checkpoint's stored reference logits.
struct VerifyReport {
  int64_t cases = 0;
  double max_abs_diff = 0;
  double max_rel_diff = 0;  ///< max |diff| / max |reference| per case
  bool argmax_agrees = true;
  bool passed = false;
};

/// Runs every reference input of `checkpoint` through `model` and compares the last
/// position's logits. Passes when max |diff| <= atol + rtol * max |reference| per case.
/// Throws std::runtime_error when the checkpoint has no reference.json.
VerifyReport verify_against_reference(const Model& model, const Checkpoint& checkpoint,
                                      double atol = 1e-3, double rtol = 1e-3);

}  // namespace destein

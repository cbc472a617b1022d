#pragma once
/// Logits processors: an ordered chain per row that edits the row's next-token scores after
/// the forward pass and before sampling. The decode core (decode_batch.hpp) owns the chain;
/// generate(), the harness and `destein serve` all sample through it. Steering edits
/// activations inside the forward pass (hooks.hpp); processors edit what comes out of it.
///
/// Three shapes of processor, each with a built-in here:
///   - scores only: TokenBanProcessor, LogitBiasProcessor (no state);
///   - scores of other models sharing the tokenizer, for the same tokens:
///     ModelEnsembleProcessor (e.g. DExperts' expert and anti-expert);
///   - scores of extra rows of the same model under other prefixes, advancing with the row:
///     PrefixedRowsProcessor (e.g. Self-Debiasing).
///
///   auto ban = std::make_shared<destein::TokenBanProcessor>(std::vector<int64_t>{50256});
///   destein::GenerationOptions o;
///   o.processors = {ban};                        // every row of generate()
///   auto gens = destein::generate(*model, prompts, o);

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace destein {

class Model;
class KVCacheRows;

/// The rows one process() call edits: a subset of a decode batch, in batch order.
struct ProcessorRows {
  int64_t vocab_size = 0;
  /// Per row: the caller's id of the row (unique among the rows of a batch while they run;
  /// generate() uses the index of the Generation it fills).
  std::vector<int64_t> row_ids;
  /// Per row: its prompt and the tokens generated so far; the scores are for the next token.
  std::vector<const std::vector<int64_t>*> prompts;
  std::vector<const std::vector<int64_t>*> generated;
  /// Per row: its scores, `vocab_size` floats, edited in place. They start as the model's
  /// raw logits (float32); sampling then applies temperature, top-k and top-p to them.
  /// -infinity bans a token: it is never sampled, greedy or not.
  std::vector<float*> scores;

  int64_t size() const { return static_cast<int64_t>(row_ids.size()); }
};

/// One link of a row's chain. A processor may serve many rows at once (and several
/// batches one after the other); it keeps whatever per-row state it needs under the row
/// ids. Calls come from one thread at a time (the decode core's).
class LogitsProcessor {
 public:
  virtual ~LogitsProcessor() = default;
  /// A short name for errors and reports ("ban", "ensemble", ...).
  virtual std::string name() const = 0;
  /// Edits the scores of `rows`. Called once for every sampled token of each row whose
  /// chain holds this processor, in chain order; a row's tokens grow by exactly the
  /// sampled token between two calls. Throws to end the rows with an error.
  virtual void process(ProcessorRows& rows) = 0;
  /// The rows finished or left: state kept for them can go. Their ids may be reused.
  virtual void release(const std::vector<int64_t>& row_ids) { (void)row_ids; }

  /// What the processor adds to a run, for the bench's cost table: parameters of models
  /// it runs beside the batch's model, and forward rows it runs per batch row.
  virtual int64_t added_parameters() const { return 0; }
  virtual int64_t extra_rows_per_row() const { return 0; }
};

using LogitsProcessorChain = std::vector<std::shared_ptr<LogitsProcessor>>;

/// Bans tokens: their scores become -infinity, so no row ever samples them.
class TokenBanProcessor : public LogitsProcessor {
 public:
  /// Throws std::invalid_argument for a negative id.
  explicit TokenBanProcessor(std::vector<int64_t> banned);
  std::string name() const override { return "ban"; }
  void process(ProcessorRows& rows) override;
  const std::vector<int64_t>& banned() const { return banned_; }

 private:
  std::vector<int64_t> banned_;
};

/// OpenAI's `logit_bias`: adds a bias to the scores of some tokens; a bias of -infinity
/// (or <= -100, as OpenAI documents it: "should result in a ban") bans the token.
class LogitBiasProcessor : public LogitsProcessor {
 public:
  /// Throws std::invalid_argument for a negative id or a NaN or +infinite bias.
  explicit LogitBiasProcessor(std::map<int64_t, float> bias);
  std::string name() const override { return "logit_bias"; }
  void process(ProcessorRows& rows) override;

 private:
  std::map<int64_t, float> bias_;
};

/// A row's tokens run through another model: one KV-cached row per batch row, prefilled
/// with the row's prompt (after an optional prefix) and fed each token the row samples, so
/// that it scores the same next token as the row. The rows of one call are batched, left
/// padded; on row-stable kernels each row's scores do not depend on the others.
class ShadowRows {
 public:
  /// `model` must outlive this object and share the batch's tokenizer.
  explicit ShadowRows(const Model& model);
  ~ShadowRows();
  ShadowRows(const ShadowRows&) = delete;
  ShadowRows& operator=(const ShadowRows&) = delete;

  /// Next-token logits of each key's row, in call order: key i's sequence is
  /// prefixes[i] + prompts[i] + generated[i]. A key seen at the previous call whose sequence
  /// grew by one token advances one step; any other key is prefilled (again). Keys of the
  /// previous call absent now are dropped. (N, V) float32 on the CPU, row-major.
  std::vector<float> next_logits(const std::vector<int64_t>& keys,
                                 const std::vector<const std::vector<int64_t>*>& prefixes,
                                 const std::vector<const std::vector<int64_t>*>& prompts,
                                 const std::vector<const std::vector<int64_t>*>& generated);
  /// Forgets the keys.
  void drop(const std::vector<int64_t>& keys);
  const Model& model() const { return model_; }

 private:
  const Model& model_;
  std::unique_ptr<KVCacheRows> rows_;
  std::vector<int64_t> keys_;  // the key of each cached row, in cache order
  std::vector<int64_t> fed_;   // tokens in each cached row (prefix + prompt + generated)
};

/// Scores from several models sharing the tokenizer, combined linearly:
/// `scores = weight_self * z + sum_i weights[i] * z_i`, z the row's own logits and z_i
/// those of models[i] on the same tokens. DExperts (Liu et al., 2021) is weight_self 1 and
/// (alpha, -alpha) on (expert, anti-expert). Each model keeps one cached row per batch row.
class ModelEnsembleProcessor : public LogitsProcessor {
 public:
  /// Throws std::invalid_argument when the models' vocabulary sizes differ from each other,
  /// or the weights do not match the models in number.
  ModelEnsembleProcessor(std::vector<const Model*> models, std::vector<double> weights,
                         double weight_self = 1.0);
  ~ModelEnsembleProcessor() override;
  std::string name() const override { return "ensemble"; }
  void process(ProcessorRows& rows) override;
  void release(const std::vector<int64_t>& row_ids) override;
  int64_t added_parameters() const override;
  int64_t extra_rows_per_row() const override { return static_cast<int64_t>(models_.size()); }

 private:
  std::vector<const Model*> models_;
  std::vector<std::unique_ptr<ShadowRows>> shadows_;
  std::vector<double> weights_;
  double weight_self_;
};

/// Scores that need the same model's scores under other prefixes: each row advances with
/// one prefixed copy per prefix (prefix + prompt + generated, its own cache rows), and
/// combine() turns the row's logits and its copies' logits into the row's new scores.
class PrefixedRowsProcessor : public LogitsProcessor {
 public:
  /// `model` is the batch's model (the copies run unsteered, without hooks). Throws
  /// std::invalid_argument for no prefix or an empty one.
  PrefixedRowsProcessor(const Model& model, std::vector<std::vector<int64_t>> prefixes);
  ~PrefixedRowsProcessor() override;
  void process(ProcessorRows& rows) override;
  void release(const std::vector<int64_t>& row_ids) override;
  const std::vector<std::vector<int64_t>>& prefixes() const { return prefixes_; }
  int64_t extra_rows_per_row() const override { return static_cast<int64_t>(prefixes_.size()); }

 protected:
  /// Rewrites `scores` (V) from the row's own logits (`scores` on entry) and `prefixed`,
  /// one (V) logits row per prefix, in prefix order.
  virtual void combine(float* scores, const std::vector<const float*>& prefixed,
                       int64_t vocab_size) const = 0;

 private:
  std::vector<std::vector<int64_t>> prefixes_;
  ShadowRows shadows_;
};

/// Self-Debiasing (Schick et al., 2021): with p = softmax(z(x)) and p_k = softmax(z(prefix_k
/// + x)), delta = p - max_k p_k, alpha = 1 where delta >= 0 else exp(lambda * delta), the
/// new scores are log q with q = alpha * p normalised (float64 arithmetic).
class SelfDebiasProcessor : public PrefixedRowsProcessor {
 public:
  /// Throws std::invalid_argument for a negative or non-finite lambda.
  SelfDebiasProcessor(const Model& model, std::vector<std::vector<int64_t>> prefixes,
                      double lambda = 50.0);
  std::string name() const override { return "self-debias"; }

 protected:
  void combine(float* scores, const std::vector<const float*>& prefixed,
               int64_t vocab_size) const override;

 private:
  double lambda_;
};

}  // namespace destein

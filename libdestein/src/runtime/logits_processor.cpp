#include "destein/runtime/logits_processor.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "check.hpp"
#include "destein/runtime/model.hpp"
#include "runtime/kv_cache_rows.hpp"

namespace destein {
namespace {
constexpr float kBanned = -std::numeric_limits<float>::infinity();
}

TokenBanProcessor::TokenBanProcessor(std::vector<int64_t> banned) : banned_(std::move(banned)) {
  for (int64_t id : banned_)
    DESTEIN_CHECK_ARG(id >= 0, "TokenBanProcessor: token id {} is negative", id);
}

void TokenBanProcessor::process(ProcessorRows& rows) {
  for (float* scores : rows.scores) {
    for (int64_t id : banned_) {
      if (id < rows.vocab_size) scores[id] = kBanned;
    }
  }
}

LogitBiasProcessor::LogitBiasProcessor(std::map<int64_t, float> bias) : bias_(std::move(bias)) {
  for (const auto& [id, b] : bias_) {
    DESTEIN_CHECK_ARG(id >= 0, "logit_bias: token id {} is negative", id);
    DESTEIN_CHECK_ARG(
        !std::isnan(b) && b != std::numeric_limits<float>::infinity(),
        "logit_bias: the bias of token {} must be a finite number or -infinity, found {}", id, b);
  }
}

void LogitBiasProcessor::process(ProcessorRows& rows) {
  for (float* scores : rows.scores) {
    for (const auto& [id, b] : bias_) {
      if (id >= rows.vocab_size) continue;
      scores[id] = b <= -100.0f ? kBanned : scores[id] + b;
    }
  }
}

// ---------------------------------------------------------------------------------------
// ShadowRows

ShadowRows::ShadowRows(const Model& model)
    : model_(model), rows_(std::make_unique<KVCacheRows>(model, nullptr, 0)) {}

ShadowRows::~ShadowRows() = default;

void ShadowRows::drop(const std::vector<int64_t>& keys) {
  std::vector<int64_t> keep, keys_kept, fed_kept;
  for (size_t r = 0; r < keys_.size(); ++r) {
    if (std::find(keys.begin(), keys.end(), keys_[r]) != keys.end()) continue;
    keep.push_back(static_cast<int64_t>(r));
    keys_kept.push_back(keys_[r]);
    fed_kept.push_back(fed_[r]);
  }
  if (keep.size() == keys_.size()) return;
  rows_->keep(keep);
  keys_ = std::move(keys_kept);
  fed_ = std::move(fed_kept);
}

std::vector<float> ShadowRows::next_logits(
    const std::vector<int64_t>& keys, const std::vector<const std::vector<int64_t>*>& prefixes,
    const std::vector<const std::vector<int64_t>*>& prompts,
    const std::vector<const std::vector<int64_t>*>& generated) {
  const size_t N = keys.size();
  const int64_t V = model_.config().vocab_size;
  auto total = [&](size_t i) {
    return static_cast<int64_t>((prefixes[i] ? prefixes[i]->size() : 0) + prompts[i]->size() +
                                generated[i]->size());
  };
  // Which cached rows advance by the one token their row sampled; the rest start over.
  std::unordered_map<int64_t, size_t> cached;
  for (size_t r = 0; r < keys_.size(); ++r) cached[keys_[r]] = r;
  std::vector<int64_t> advance_rows;  // cached row of each advancing key
  std::vector<size_t> advance_keys, fresh_keys;
  for (size_t i = 0; i < N; ++i) {
    auto it = cached.find(keys[i]);
    if (it != cached.end() && !generated[i]->empty() && fed_[it->second] + 1 == total(i)) {
      advance_rows.push_back(static_cast<int64_t>(it->second));
      advance_keys.push_back(i);
    } else {
      fresh_keys.push_back(i);
    }
  }
  std::vector<float> out(N * static_cast<size_t>(V));
  auto put = [&](const at::Tensor& logits, int64_t row, size_t key) {  // logits (R, V) f32 CPU
    std::memcpy(out.data() + key * V, logits.data_ptr<float>() + row * V, sizeof(float) * V);
  };
  std::vector<int64_t> keys_now, fed_now;
  rows_->keep(advance_rows);
  if (!advance_rows.empty()) {
    std::vector<int64_t> tokens;
    for (size_t i : advance_keys) {
      tokens.push_back(generated[i]->back());
      keys_now.push_back(keys[i]);
      fed_now.push_back(total(i));
    }
    try {
      at::Tensor logits = rows_->advance(tokens, std::vector<char>(tokens.size(), 1), 64);
      for (size_t j = 0; j < advance_keys.size(); ++j)
        put(logits, static_cast<int64_t>(j), advance_keys[j]);
    } catch (...) {
      rows_->clear();
      keys_.clear();
      fed_.clear();
      throw;
    }
  }
  keys_ = keys_now;
  fed_ = fed_now;
  if (!fresh_keys.empty()) {
    std::vector<std::vector<int64_t>> sequences;
    std::vector<int64_t> source;
    for (size_t i : fresh_keys) {
      std::vector<int64_t> seq;
      if (prefixes[i]) seq = *prefixes[i];
      seq.insert(seq.end(), prompts[i]->begin(), prompts[i]->end());
      seq.insert(seq.end(), generated[i]->begin(), generated[i]->end());
      DESTEIN_CHECK_ARG(
          static_cast<int64_t>(seq.size()) < model_.config().max_positions,
          "logits processor: a row of {} tokens (prefix + prompt + generated) is past the {} "
          "positions of its model",
          seq.size(), model_.config().max_positions);
      source.push_back(static_cast<int64_t>(sequences.size()));
      sequences.push_back(std::move(seq));
    }
    at::Tensor logits = rows_->prefill(sequences, source, 16);
    for (size_t j = 0; j < fresh_keys.size(); ++j) {
      put(logits, static_cast<int64_t>(j), fresh_keys[j]);
      keys_.push_back(keys[fresh_keys[j]]);
      fed_.push_back(static_cast<int64_t>(sequences[j].size()));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// ModelEnsembleProcessor

ModelEnsembleProcessor::ModelEnsembleProcessor(std::vector<const Model*> models,
                                               std::vector<double> weights, double weight_self)
    : models_(models), weights_(std::move(weights)), weight_self_(weight_self) {
  DESTEIN_CHECK_ARG(!models.empty(), "ModelEnsembleProcessor: no model to combine");
  DESTEIN_CHECK_ARG(models.size() == weights_.size(),
                    "ModelEnsembleProcessor: {} models but {} weights", models.size(),
                    weights_.size());
  const int64_t V = models.front()->config().vocab_size;
  for (const Model* m : models) {
    DESTEIN_CHECK_ARG(m != nullptr, "ModelEnsembleProcessor: a model is null");
    DESTEIN_CHECK_ARG(m->config().vocab_size == V,
                      "ModelEnsembleProcessor: the models' vocabularies differ ({} and {} tokens); "
                      "they must share "
                      "the tokenizer",
                      V, m->config().vocab_size);
    shadows_.push_back(std::make_unique<ShadowRows>(*m));
  }
}

ModelEnsembleProcessor::~ModelEnsembleProcessor() = default;

int64_t ModelEnsembleProcessor::added_parameters() const {
  int64_t n = 0;
  for (const Model* m : models_) n += m->parameter_count();
  return n;
}

void ModelEnsembleProcessor::process(ProcessorRows& rows) {
  const int64_t V = rows.vocab_size;
  const int64_t V_other = shadows_.front()->model().config().vocab_size;
  DESTEIN_CHECK_ARG(V_other == V,
                    "ensemble: the batch's model has {} tokens, the ensemble's models {}", V,
                    V_other);
  const std::vector<const std::vector<int64_t>*> no_prefix(rows.row_ids.size(), nullptr);
  std::vector<std::vector<float>> others;
  for (auto& shadow : shadows_) {
    others.push_back(shadow->next_logits(rows.row_ids, no_prefix, rows.prompts, rows.generated));
  }
  for (size_t i = 0; i < rows.scores.size(); ++i) {
    float* s = rows.scores[i];
    for (int64_t v = 0; v < V; ++v) {
      double z = weight_self_ * s[v];
      for (size_t m = 0; m < others.size(); ++m) z += weights_[m] * others[m][i * V + v];
      s[v] = static_cast<float>(z);
    }
  }
}

void ModelEnsembleProcessor::release(const std::vector<int64_t>& row_ids) {
  for (auto& shadow : shadows_) shadow->drop(row_ids);
}

// ---------------------------------------------------------------------------------------
// PrefixedRowsProcessor

PrefixedRowsProcessor::PrefixedRowsProcessor(const Model& model,
                                             std::vector<std::vector<int64_t>> prefixes)
    : prefixes_(std::move(prefixes)), shadows_(model) {
  DESTEIN_CHECK_ARG(!prefixes_.empty(), "prefixed rows: no prefix given");
  for (size_t k = 0; k < prefixes_.size(); ++k) {
    DESTEIN_CHECK_ARG(!prefixes_[k].empty(), "prefixed rows: prefix {} is empty", k);
    for (int64_t id : prefixes_[k]) {
      DESTEIN_CHECK_ARG(id >= 0 && id < model.config().vocab_size,
                        "prefixed rows: prefix {} holds token id {} outside the vocabulary [0, {})",
                        k, id, model.config().vocab_size);
    }
  }
}

PrefixedRowsProcessor::~PrefixedRowsProcessor() = default;

void PrefixedRowsProcessor::process(ProcessorRows& rows) {
  const size_t K = prefixes_.size(), N = rows.row_ids.size();
  const int64_t V = rows.vocab_size;
  // Copy k of row i is keyed row_id * K + k: one cached row each, advancing with the row.
  std::vector<int64_t> keys;
  std::vector<const std::vector<int64_t>*> prefixes, prompts, generated;
  // A prefix that starts with the model's BOS already begins the sequence: the prompt's own
  // leading BOS would put a second document start between prefix and prompt.
  const auto bos = shadows_.model().config().bos_token_id;
  std::vector<std::vector<int64_t>> after_bos;
  after_bos.reserve(N);
  for (size_t i = 0; i < N; ++i) {
    const std::vector<int64_t>* prompt = rows.prompts[i];
    const std::vector<int64_t>* prompt_after_bos = prompt;
    if (bos && !prompt->empty() && prompt->front() == *bos) {
      after_bos.emplace_back(prompt->begin() + 1, prompt->end());
      prompt_after_bos = &after_bos.back();
    }
    for (size_t k = 0; k < K; ++k) {
      keys.push_back(rows.row_ids[i] * static_cast<int64_t>(K) + static_cast<int64_t>(k));
      prefixes.push_back(&prefixes_[k]);
      const bool prefix_has_bos = bos && prefixes_[k].front() == *bos;
      prompts.push_back(prefix_has_bos ? prompt_after_bos : prompt);
      generated.push_back(rows.generated[i]);
    }
  }
  const std::vector<float> copies =
      shadows_.next_logits(keys, prefixes, prompts, generated);  // (N K, V)
  std::vector<const float*> mine(K);
  for (size_t i = 0; i < N; ++i) {
    for (size_t k = 0; k < K; ++k) mine[k] = copies.data() + (i * K + k) * V;
    combine(rows.scores[i], mine, V);
  }
}

void PrefixedRowsProcessor::release(const std::vector<int64_t>& row_ids) {
  std::vector<int64_t> keys;
  const auto K = static_cast<int64_t>(prefixes_.size());
  for (int64_t id : row_ids) {
    for (int64_t k = 0; k < K; ++k) keys.push_back(id * K + k);
  }
  shadows_.drop(keys);
}

// ---------------------------------------------------------------------------------------
// SelfDebiasProcessor

SelfDebiasProcessor::SelfDebiasProcessor(const Model& model,
                                         std::vector<std::vector<int64_t>> prefixes, double lambda)
    : PrefixedRowsProcessor(model, std::move(prefixes)), lambda_(lambda) {
  DESTEIN_CHECK_ARG(std::isfinite(lambda) && lambda >= 0,
                    "self-debias: lambda must be a finite number >= 0, found {}", lambda);
}

namespace {
// softmax of (V) float logits into float64 probabilities.
void softmax(const float* z, int64_t V, std::vector<double>& p) {
  p.resize(static_cast<size_t>(V));
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < V; ++v) m = std::max(m, static_cast<double>(z[v]));
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += p[v] = std::exp(static_cast<double>(z[v]) - m);
  for (auto& x : p) x /= sum;
}
}  // namespace

void SelfDebiasProcessor::combine(float* scores, const std::vector<const float*>& prefixed,
                                  int64_t V) const {
  std::vector<double> p, pk, worst(static_cast<size_t>(V), 0.0);
  softmax(scores, V, p);
  for (const float* z : prefixed) {
    softmax(z, V, pk);
    for (int64_t v = 0; v < V; ++v) worst[v] = std::max(worst[v], pk[v]);
  }
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) {
    const double delta = p[v] - worst[v];
    const double alpha = delta >= 0 ? 1.0 : std::exp(lambda_ * delta);
    sum += p[v] = alpha * p[v];
  }
  for (int64_t v = 0; v < V; ++v)
    scores[v] = static_cast<float>(p[v] > 0 ? std::log(p[v] / sum) : -INFINITY);
}

}  // namespace destein

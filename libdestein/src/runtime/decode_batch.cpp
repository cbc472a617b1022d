#include "runtime/decode_batch.hpp"

#include <ATen/ATen.h>
#include "runtime/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "check.hpp"
#include "destein/runtime/model.hpp"
#include "runtime/kv_cache_rows.hpp"
#include "runtime/row_stream.hpp"

namespace destein {

void check_sampling_options(const GenerationOptions& o, const std::string& who) {
  DESTEIN_CHECK_ARG(o.max_new_tokens > 0, "{}: max_new_tokens must be positive, found {}", who,
                    o.max_new_tokens);
  DESTEIN_CHECK_ARG(
      !o.do_sample || o.temperature > 0,
      "{}: temperature must be > 0 when sampling, found {} (use greedy decoding instead of "
      "temperature 0)",
      who, o.temperature);
  DESTEIN_CHECK_ARG(o.top_k >= 0, "{}: top_k must be >= 0 (0 = off), found {}", who, o.top_k);
  DESTEIN_CHECK_ARG(o.top_p > 0 && o.top_p <= 1, "{}: top_p must be in (0, 1], found {}", who,
                    o.top_p);
}

void check_decode_prompts(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                          int64_t max_new_tokens, const std::string& who) {
  const ModelConfig& c = model.config();
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto& prompt = prompts[p];
    DESTEIN_CHECK_ARG(!prompt.empty(), "{}: prompt {} is empty (it needs at least one token)", who,
                      p);
    DESTEIN_CHECK_ARG(
        static_cast<int64_t>(prompt.size()) + max_new_tokens <= c.max_positions,
        "{}: prompt {} has {} tokens; with max_new_tokens {} that is past the model's limit of {} "
        "positions",
        who, p, prompt.size(), max_new_tokens, c.max_positions);
    for (int64_t id : prompt) {
      DESTEIN_CHECK_ARG(id >= 0 && id < c.vocab_size,
                        "{}: prompt {} holds token id {} outside the vocabulary [0, {})", who, p,
                        id, c.vocab_size);
    }
  }
}

DecodeBatch::DecodeBatch(const Model& model, DecodeBatchOptions options)
    : model_(model),
      options_(std::move(options)),
      cache_(std::make_unique<KVCacheRows>(model, options_.hooks, options_.pad_id)) {}

DecodeBatch::~DecodeBatch() = default;

int64_t DecodeBatch::running() const {
  int64_t n = 0;
  for (const DecodeRow& r : rows_) n += r.finish == FinishReason::kNone ? 1 : 0;
  return n;
}

void DecodeBatch::end_row(DecodeRow& row, FinishReason reason, std::string error) {
  if (row.finish != FinishReason::kNone) return;
  row.finish = reason;
  row.error = std::move(error);
  // A processor's state for the row goes now: the row is never processed again.
  for (const auto& p : row.processors_) p->release({row.id});
}

void DecodeBatch::finish(size_t index, FinishReason reason) {
  DESTEIN_CHECK_ARG(index < rows_.size(), "DecodeBatch::finish: row {} of {}", index, rows_.size());
  DESTEIN_CHECK_ARG(reason != FinishReason::kNone, "DecodeBatch::finish: a reason is needed");
  end_row(rows_[index], reason);
}

void DecodeBatch::add(std::vector<DecodeRowSpec> specs) {
  DESTEIN_CHECK_ARG(!broken_,
                    "DecodeBatch::add: a step failed; call remove_finished() before adding rows");
  if (specs.empty()) return;
  std::unordered_set<int64_t> ids;
  for (const DecodeRow& r : rows_) {
    if (r.finish == FinishReason::kNone) ids.insert(r.id);
  }
  std::vector<std::vector<int64_t>> sequences;
  std::vector<int64_t> source;  // the prompt pass row of each newcomer
  DecodeForward layout;
  layout.prefill = true;
  int64_t reserve = 1;
  for (size_t i = 0; i < specs.size(); ++i) {
    const DecodeRowSpec& s = specs[i];
    const std::string who = fmt::format("decode row {}", s.id);
    check_sampling_options(s.sampling, who);
    check_decode_prompts(model_, {s.prompt}, s.sampling.max_new_tokens, who);
    DESTEIN_CHECK_ARG(ids.insert(s.id).second, "DecodeBatch::add: row id {} is already running",
                      s.id);
    for (const auto& p : s.processors)
      DESTEIN_CHECK_ARG(p != nullptr, "{}: a logits processor is null", who);
    const bool shared =
        s.prefill_group >= 0 && i > 0 && specs[i - 1].prefill_group == s.prefill_group;
    if (shared) {
      DESTEIN_CHECK_ARG(
          specs[i - 1].prompt == s.prompt,
          "DecodeBatch::add: rows {} and {} share prefill group {} but not their prompt",
          specs[i - 1].id, s.id, s.prefill_group);
    } else {
      sequences.push_back(s.prompt);
      layout.row_ids.emplace_back();
    }
    source.push_back(static_cast<int64_t>(sequences.size()) - 1);
    layout.row_ids.back().push_back(s.id);
    reserve = std::max(reserve, s.sampling.max_new_tokens);
  }
  for (const DecodeRow& r : rows_) {
    if (r.finish == FinishReason::kNone) {
      reserve =
          std::max(reserve, r.sampling_.max_new_tokens - static_cast<int64_t>(r.generated.size()));
    }
  }
  if (options_.before_forward) options_.before_forward(layout);
  at::Tensor logits = cache_->prefill(sequences, source, reserve);  // (S, V)
  last_forward_rows_ = static_cast<int64_t>(sequences.size());
  if (source.size() != sequences.size()) {
    // One scores row per newcomer: processors edit them in place.
    logits = logits.index_select(0, at::tensor(source, at::kLong)).contiguous();  // (N, V)
  }
  const int64_t eos_default = model_.config().eos_token_id.value_or(-1);
  std::vector<size_t> added;
  for (DecodeRowSpec& s : specs) {
    DecodeRow row;
    row.id = s.id;
    row.prompt = std::move(s.prompt);
    row.eos_ = s.sampling.eos_id >= 0 ? s.sampling.eos_id : eos_default;
    row.sampling_ = std::move(s.sampling);
    row.rng_ = s.rng;
    row.processors_ = std::move(s.processors);
    added.push_back(rows_.size());
    rows_.push_back(std::move(row));
  }
  sample(added, logits.data_ptr<float>());
}

void DecodeBatch::step() {
  const int64_t B = static_cast<int64_t>(rows_.size());
  std::vector<int64_t> tokens(static_cast<size_t>(B), options_.pad_id);
  std::vector<char> live(static_cast<size_t>(B), 0);
  std::vector<size_t> all(static_cast<size_t>(B));
  DecodeForward layout;
  int64_t reserve = 1;
  bool any = false;
  for (int64_t b = 0; b < B; ++b) {
    DecodeRow& r = rows_[static_cast<size_t>(b)];
    r.last_token = -1;
    all[static_cast<size_t>(b)] = static_cast<size_t>(b);
    layout.row_ids.push_back({r.id});
    if (r.finish != FinishReason::kNone) continue;
    tokens[static_cast<size_t>(b)] = r.generated.back();
    live[static_cast<size_t>(b)] = 1;
    reserve =
        std::max(reserve, r.sampling_.max_new_tokens - static_cast<int64_t>(r.generated.size()));
    any = true;
  }
  last_forward_rows_ = 0;
  if (!any) return;
  if (options_.before_forward) options_.before_forward(layout);
  at::Tensor logits;
  try {
    logits = cache_->advance(tokens, live, reserve);  // (B, V)
  } catch (const std::exception& e) {
    // The cache is in an unknown state: every row ends, and remove_finished() empties it.
    for (DecodeRow& r : rows_) end_row(r, FinishReason::kError, e.what());
    cache_->clear();
    broken_ = true;
    throw;
  }
  last_forward_rows_ = B;
  sample(all, logits.data_ptr<float>());
}

void DecodeBatch::sample(const std::vector<size_t>& rows, float* data) {
  const int64_t V = model_.config().vocab_size;
  const size_t N = rows.size();
  // The chains, position by position; the rows sharing a processor at a position go to it
  // in one call, in batch order.
  size_t longest = 0;
  for (size_t i : rows) longest = std::max(longest, rows_[i].processors_.size());
  for (size_t k = 0; k < longest; ++k) {
    std::vector<LogitsProcessor*> order;
    std::unordered_map<LogitsProcessor*, std::pair<ProcessorRows, std::vector<size_t>>> groups;
    for (size_t j = 0; j < N; ++j) {
      DecodeRow& r = rows_[rows[j]];
      if (r.finish != FinishReason::kNone || k >= r.processors_.size()) continue;
      LogitsProcessor* p = r.processors_[k].get();
      auto [it, fresh] = groups.try_emplace(p);
      if (fresh) {
        order.push_back(p);
        it->second.first.vocab_size = V;
      }
      ProcessorRows& pr = it->second.first;
      pr.row_ids.push_back(r.id);
      pr.prompts.push_back(&r.prompt);
      pr.generated.push_back(&r.generated);
      pr.scores.push_back(data + j * V);
      it->second.second.push_back(rows[j]);
    }
    for (LogitsProcessor* p : order) {
      auto& [pr, members] = groups[p];
      try {
        p->process(pr);
      } catch (const std::exception& e) {
        for (size_t i : members) {
          end_row(rows_[i], FinishReason::kError,
                  fmt::format("logits processor '{}': {}", p->name(), e.what()));
        }
      }
    }
  }
  // Uniforms are drawn serially so that each row's stream advances once per token.
  std::vector<double> uniforms(N, 0.0);
  for (size_t j = 0; j < N; ++j) {
    DecodeRow& r = rows_[rows[j]];
    if (r.finish != FinishReason::kNone) continue;
    if (!r.processors_.empty()) {
      const float* s = data + j * V;
      const float best = *std::max_element(s, s + V);
      if (!(best > -std::numeric_limits<float>::infinity())) {
        end_row(r, FinishReason::kError,
                "the logits processors left no token to sample (every score is -infinity or NaN)");
        continue;
      }
    }
    uniforms[j] = detail::uniform01(r.rng_);
  }
  std::vector<int64_t> next(N, -1);
  at::parallel_for(0, static_cast<int64_t>(N), 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const DecodeRow& r = rows_[rows[static_cast<size_t>(j)]];
      if (r.finish == FinishReason::kNone)
        next[j] = sample_token(data + j * V, V, r.sampling_, uniforms[j]);
    }
  });
  for (size_t j = 0; j < N; ++j) {
    DecodeRow& r = rows_[rows[j]];
    r.last_token = -1;
    if (r.finish != FinishReason::kNone) continue;
    if (r.sampling_.stop_at_eos && next[j] == r.eos_) {
      end_row(r, FinishReason::kEos);
      continue;
    }
    r.generated.push_back(next[j]);
    r.last_token = next[j];
    if (static_cast<int64_t>(r.generated.size()) >= r.sampling_.max_new_tokens)
      end_row(r, FinishReason::kLength);
  }
}

void DecodeBatch::remove_finished() {
  if (broken_) {
    rows_.clear();
    broken_ = false;
    return;
  }
  std::vector<int64_t> keep;
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (rows_[i].finish == FinishReason::kNone) keep.push_back(static_cast<int64_t>(i));
  }
  if (keep.size() == rows_.size()) return;
  std::vector<DecodeRow> kept;
  for (int64_t i : keep) kept.push_back(std::move(rows_[static_cast<size_t>(i)]));
  rows_ = std::move(kept);
  cache_->keep(keep);
}

}  // namespace destein

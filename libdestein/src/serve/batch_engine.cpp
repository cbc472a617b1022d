#include "destein/serve/batch_engine.hpp"

#include <ATen/ATen.h>
#include "runtime/parallel.hpp"

#include <algorithm>
#include <random>

#include "check.hpp"
#include "runtime/families/decoder.hpp"
#include "runtime/row_stream.hpp"

namespace destein {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kNone: return "null";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeout: return "timeout";
    case FinishReason::kError: return "error";
    default: return "stop";
  }
}

// ---------------------------------------------------------------------------------------
// RequestStream

void RequestStream::push(EngineEvent event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

bool RequestStream::next(EngineEvent& event) {
  bool timed_out = false;
  while (true) {
    if (next_for(event, std::chrono::milliseconds(1000), timed_out)) return true;
    if (!timed_out) return false;
  }
}

bool RequestStream::next_for(EngineEvent& event, std::chrono::milliseconds timeout, bool& timed_out) {
  std::unique_lock<std::mutex> lock(mutex_);
  timed_out = false;
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty() || finished_ == choices_; })) {
    timed_out = true;
    return false;
  }
  if (events_.empty()) return false;
  event = std::move(events_.front());
  events_.pop_front();
  if (event.finished != FinishReason::kNone) ++finished_;
  return true;
}

void RequestStream::stop_choice(int64_t choice) {
  if (choice >= 0 && choice < choices_) stop_flags_[static_cast<size_t>(choice)] = true;
}

// ---------------------------------------------------------------------------------------
// Engine

struct BatchEngine::Row {
  std::shared_ptr<RequestStream> stream;
  int64_t choice = 0;
  std::mt19937_64 rng;
  GenerationOptions sampling;
  SteeringStack steering;
  int64_t max_tokens = 0;
  int64_t eos = -1;
  std::chrono::steady_clock::time_point deadline;
  int64_t generated = 0;
  int64_t length = 0;  // real positions of this row in the cache
  int64_t last = -1;   // the last sampled token, not yet in the cache
  FinishReason done = FinishReason::kNone;
};

BatchEngine::BatchEngine(const Model& model, BatchEngineOptions options) : model_(model), options_(options) {
  DESTEIN_CHECK_ARG(options_.max_rows > 0, "BatchEngine: max_rows must be positive, found {}", options_.max_rows);
  DESTEIN_CHECK_ARG(options_.max_queue >= 0, "BatchEngine: max_queue must be >= 0, found {}", options_.max_queue);
  controller_ = std::make_unique<SteeringController>(hooks_, model.config(), model.device());
  stats_.rows_per_forward_buckets.assign(16, 0);
  thread_ = std::thread([this] { run(); });
}

BatchEngine::~BatchEngine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<RequestStream> BatchEngine::submit(EngineRequest request) {
  const ModelConfig& c = model_.config();
  DESTEIN_CHECK_ARG(!request.prompts.empty(), "submit: a request needs at least one prompt");
  DESTEIN_CHECK_ARG(request.n > 0, "submit: n must be positive, found {}", request.n);
  DESTEIN_CHECK_ARG(request.max_tokens > 0, "submit: max_tokens must be positive, found {}", request.max_tokens);
  const int64_t rows = static_cast<int64_t>(request.prompts.size()) * request.n;
  DESTEIN_CHECK_ARG(rows <= options_.max_rows,
                    "submit: the request asks for {} rows (prompts x n) but the server batches at most {}", rows,
                    options_.max_rows);
  const GenerationOptions& o = request.sampling;
  DESTEIN_CHECK_ARG(!o.do_sample || o.temperature > 0, "submit: temperature must be > 0 when sampling, found {}",
                    o.temperature);
  DESTEIN_CHECK_ARG(o.top_k >= 0, "submit: top_k must be >= 0 (0 = off), found {}", o.top_k);
  DESTEIN_CHECK_ARG(o.top_p > 0 && o.top_p <= 1, "submit: top_p must be in (0, 1], found {}", o.top_p);
  for (size_t p = 0; p < request.prompts.size(); ++p) {
    const auto& prompt = request.prompts[p];
    DESTEIN_CHECK_ARG(!prompt.empty(), "submit: prompt {} is empty (it needs at least one token)", p);
    DESTEIN_CHECK_ARG(static_cast<int64_t>(prompt.size()) + request.max_tokens <= c.max_positions,
                      "submit: prompt {} has {} tokens; with max_tokens {} that is past the model's limit of {} "
                      "positions",
                      p, prompt.size(), request.max_tokens, c.max_positions);
    for (int64_t id : prompt) {
      DESTEIN_CHECK_ARG(id >= 0 && id < c.vocab_size, "submit: prompt {} holds token id {} outside the vocabulary [0, {})",
                        p, id, c.vocab_size);
    }
  }
  auto stream = std::make_shared<RequestStream>(rows);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_ || stopping_ || static_cast<int64_t>(queue_.size()) >= options_.max_queue) return nullptr;
    queue_.push_back(Pending{std::move(request), stream});
    stats_.queued = static_cast<int64_t>(queue_.size());
  }
  wake_.notify_all();
  return stream;
}

void BatchEngine::drain() {
  draining_ = true;
  wake_.notify_all();
}

bool BatchEngine::idle() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.empty() && admitted_rows_ == 0;
}

BatchEngineStats BatchEngine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

// Emits a sampled token for `row`; returns false when the row has finished.
bool BatchEngine::emit(Row& row, int64_t token) {
  if (row.sampling.stop_at_eos && token == row.eos) {
    row.done = FinishReason::kEos;
    row.stream->push({row.choice, -1, FinishReason::kEos, {}});
    return false;
  }
  ++row.generated;
  row.last = token;
  if (row.generated >= row.max_tokens) row.done = FinishReason::kLength;
  row.stream->push({row.choice, token, row.done, {}});
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.generated_tokens;
  return row.done == FinishReason::kNone;
}

bool BatchEngine::admit(std::vector<Pending>& taking, std::vector<Row>& joining, KVCache& joining_cache) {
  const int64_t V = model_.config().vocab_size;
  const auto now = std::chrono::steady_clock::now();
  struct Prompt {
    Pending* pending;
    size_t index;
  };
  std::vector<Prompt> prompts;
  int64_t rows_total = 0;
  for (Pending& pending : taking) {
    const EngineRequest& req = pending.request;
    const int64_t choices = pending.stream->choices();
    if (pending.stream->cancelled() || now >= req.deadline) {
      const FinishReason why = pending.stream->cancelled() ? FinishReason::kCancelled : FinishReason::kTimeout;
      for (int64_t c = 0; c < choices; ++c) pending.stream->push({c, -1, why, {}});
      std::lock_guard<std::mutex> lock(mutex_);
      admitted_rows_ -= choices;
      continue;
    }
    rows_total += choices;
    for (size_t p = 0; p < req.prompts.size(); ++p) prompts.push_back({&pending, p});
  }
  if (prompts.empty()) return false;
  // One prompt pass for all newcomers, left-padded: on the row-stable kernels a row's
  // logits and cache do not depend on the other rows or on its padding, so each prompt gets
  // what generate() computes for it alone.
  const int64_t P = static_cast<int64_t>(prompts.size());
  int64_t L = 0, prompt_tokens = 0;
  for (const Prompt& pr : prompts) {
    const int64_t n = static_cast<int64_t>(pr.pending->request.prompts[pr.index].size());
    L = std::max(L, n);
    prompt_tokens += n;
  }
  at::Tensor ids = at::zeros({P, L}, at::kLong);   // (P, L), left padding masked out
  at::Tensor mask = at::zeros({P, L}, at::kLong);  // (P, L)
  std::vector<SteeringStack> stacks(static_cast<size_t>(P));
  {
    auto acc = ids.accessor<int64_t, 2>();
    for (int64_t i = 0; i < P; ++i) {
      const auto& prompt = prompts[size_t(i)].pending->request.prompts[prompts[size_t(i)].index];
      const int64_t n = static_cast<int64_t>(prompt.size());
      for (int64_t j = 0; j < n; ++j) acc[i][L - n + j] = prompt[size_t(j)];
      mask.narrow(0, i, 1).narrow(1, L - n, n).fill_(1);
      stacks[size_t(i)] = prompts[size_t(i)].pending->request.steering;
    }
  }
  KVCache cache = model_.make_cache(P, L);
  at::Tensor logits;
  try {
    controller_->set_rows(std::move(stacks));
    ForwardOptions fo;
    fo.cache = &cache;
    fo.hooks = &hooks_;
    fo.logits = LogitsFor::kLast;
    fo.attention_mask = mask;
    logits = model_.forward(ids, fo).logits.reshape({P, V}).to(at::kCPU).contiguous();
  } catch (const std::exception& e) {
    for (Pending& pending : taking) {
      if (pending.stream->cancelled()) continue;
      for (int64_t c = 0; c < pending.stream->choices(); ++c) pending.stream->push({c, -1, FinishReason::kError, e.what()});
    }
    std::lock_guard<std::mutex> lock(mutex_);
    admitted_rows_ -= rows_total;
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.prefills += P;
    ++stats_.prefill_passes;
    stats_.prompt_tokens += prompt_tokens;
  }
  const float* data = logits.data_ptr<float>();
  std::vector<int64_t> keep;  // the prompt row each joining row continues from
  int64_t ended = 0;
  for (int64_t i = 0; i < P; ++i) {
    const Pending& pending = *prompts[size_t(i)].pending;
    const EngineRequest& req = pending.request;
    const int64_t p = static_cast<int64_t>(prompts[size_t(i)].index);
    for (int64_t s = 0; s < req.n; ++s) {
      Row row;
      row.stream = pending.stream;
      row.choice = p * req.n + s;
      row.rng = detail::row_stream(req.sampling.seed, p, s);
      row.sampling = req.sampling;
      row.steering = req.steering;
      row.max_tokens = req.max_tokens;
      row.eos = req.sampling.eos_id >= 0 ? req.sampling.eos_id : model_.config().eos_token_id.value_or(-1);
      row.deadline = req.deadline;
      row.length = static_cast<int64_t>(req.prompts[size_t(p)].size());
      const double u = detail::uniform01(row.rng);
      if (emit(row, sample_token(data + i * V, V, row.sampling, u))) {
        keep.push_back(i);
        joining.push_back(std::move(row));
      } else {
        ++ended;
      }
    }
  }
  if (ended > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    admitted_rows_ -= ended;
  }
  if (keep.empty()) return false;
  cache.select_rows(at::tensor(keep, at::kLong));
  joining_cache = std::move(cache);
  return true;
}

void BatchEngine::step() {
  const int64_t B = static_cast<int64_t>(rows_.size());
  const int64_t V = model_.config().vocab_size;
  const int64_t T = cache_.length();
  if (T + 1 > cache_.capacity()) {
    int64_t remaining = 1;
    for (const Row& r : rows_) remaining = std::max(remaining, r.max_tokens - r.generated);
    cache_ = DecoderModel::stack_caches({&cache_}, T + remaining);
  }
  std::vector<int64_t> last(static_cast<size_t>(B));
  std::vector<SteeringStack> stacks(static_cast<size_t>(B));
  at::Tensor mask = at::zeros({B, T + 1}, at::kLong);  // (B, T + 1): each row's real positions, right-aligned
  for (int64_t b = 0; b < B; ++b) {
    const Row& r = rows_[static_cast<size_t>(b)];
    last[static_cast<size_t>(b)] = r.last;
    stacks[static_cast<size_t>(b)] = r.steering;
    mask.narrow(0, b, 1).narrow(1, T - r.length, r.length + 1).fill_(1);
  }
  at::Tensor logits;
  try {
    controller_->set_rows(std::move(stacks));
    ForwardOptions fo;
    fo.cache = &cache_;
    fo.hooks = &hooks_;
    fo.logits = LogitsFor::kLast;
    fo.attention_mask = mask;
    logits = model_.forward(at::tensor(last, at::kLong).view({B, 1}), fo).logits.reshape({B, V}).to(at::kCPU).contiguous();
  } catch (const std::exception& e) {
    for (Row& r : rows_) {
      r.done = FinishReason::kError;
      r.stream->push({r.choice, -1, FinishReason::kError, e.what()});
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.forwards;
    stats_.rows_forwarded += B;
    size_t bucket = 0;
    while ((int64_t{1} << bucket) < B && bucket + 1 < stats_.rows_per_forward_buckets.size()) ++bucket;
    ++stats_.rows_per_forward_buckets[bucket];
  }
  const float* data = logits.data_ptr<float>();
  // Uniforms are drawn serially so that each row's stream advances once per token.
  std::vector<double> uniforms(static_cast<size_t>(B));
  std::vector<int64_t> next(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) uniforms[size_t(b)] = detail::uniform01(rows_[size_t(b)].rng);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      next[size_t(b)] = sample_token(data + b * V, V, rows_[size_t(b)].sampling, uniforms[size_t(b)]);
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    Row& r = rows_[static_cast<size_t>(b)];
    ++r.length;
    emit(r, next[static_cast<size_t>(b)]);
  }
}

void BatchEngine::remove_finished() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int64_t> keep;
  int64_t removed = 0;
  for (size_t i = 0; i < rows_.size(); ++i) {
    Row& r = rows_[i];
    if (r.done == FinishReason::kNone) {
      FinishReason why = FinishReason::kNone;
      if (r.stream->cancelled()) why = FinishReason::kCancelled;
      else if (r.stream->stop_requested(r.choice)) why = FinishReason::kStopped;
      else if (now >= r.deadline) why = FinishReason::kTimeout;
      if (why != FinishReason::kNone) {
        r.done = why;
        r.stream->push({r.choice, -1, why, {}});
      }
    }
    if (r.done == FinishReason::kNone) keep.push_back(static_cast<int64_t>(i));
    else ++removed;
  }
  if (removed == 0) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    admitted_rows_ -= removed;
    stats_.active_rows = static_cast<int64_t>(keep.size());
  }
  if (keep.empty()) {
    rows_.clear();
    cache_ = KVCache();
    have_cache_ = false;
    return;
  }
  std::vector<Row> kept;
  int64_t longest = 0;
  for (int64_t i : keep) {
    longest = std::max(longest, rows_[static_cast<size_t>(i)].length);
    kept.push_back(std::move(rows_[static_cast<size_t>(i)]));
  }
  rows_ = std::move(kept);
  cache_.select_rows(at::tensor(keep, at::kLong));
  // Columns that are padding for every remaining row carry nothing: drop them.
  DecoderModel::drop_leading_columns(cache_, cache_.length() - longest);
}

void BatchEngine::run() {
  while (true) {
    std::vector<Pending> taking;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !rows_.empty(); });
      if (stopping_) break;
      while (!queue_.empty()) {
        Pending& front = queue_.front();
        const int64_t need = static_cast<int64_t>(front.request.prompts.size()) * front.request.n;
        if (!front.stream->cancelled() && admitted_rows_ + need > options_.max_rows) break;
        admitted_rows_ += need;
        taking.push_back(std::move(front));
        queue_.pop_front();
      }
      stats_.queued = static_cast<int64_t>(queue_.size());
    }
    std::vector<Row> joining;
    KVCache joining_cache;
    if (!taking.empty() && admit(taking, joining, joining_cache)) {
      std::vector<const KVCache*> parts;
      if (have_cache_) parts.push_back(&cache_);
      parts.push_back(&joining_cache);
      const int64_t length = std::max(have_cache_ ? cache_.length() : int64_t{0}, joining_cache.length());
      int64_t remaining = 1;
      for (Row& r : joining) rows_.push_back(std::move(r));
      for (const Row& r : rows_) remaining = std::max(remaining, r.max_tokens - r.generated);
      cache_ = DecoderModel::stack_caches(parts, length + remaining);
      have_cache_ = true;
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_rows = static_cast<int64_t>(rows_.size());
    }
    remove_finished();
    if (!rows_.empty()) {
      step();
      remove_finished();
    }
  }
  // Stopped: whatever still runs or waits ends as cancelled, so that no caller waits forever.
  for (Row& r : rows_) {
    if (r.done == FinishReason::kNone) r.stream->push({r.choice, -1, FinishReason::kCancelled, {}});
  }
  rows_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  for (Pending& p : queue_) {
    for (int64_t c = 0; c < p.stream->choices(); ++c) p.stream->push({c, -1, FinishReason::kCancelled, {}});
  }
  queue_.clear();
}

}  // namespace destein

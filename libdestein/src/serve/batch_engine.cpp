#include "serve/batch_engine.hpp"

#include <ATen/ATen.h>
#include "runtime/parallel.hpp"

#include <algorithm>
#include <random>

#include "check.hpp"
#include "runtime/row_stream.hpp"

namespace destein {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kNone:
      return "null";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kTimeout:
      return "timeout";
    case FinishReason::kError:
      return "error";
    default:
      return "stop";
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

bool RequestStream::next_for(EngineEvent& event, std::chrono::milliseconds timeout,
                             bool& timed_out) {
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

struct BatchEngine::RowMeta {
  std::shared_ptr<RequestStream> stream;
  int64_t choice = 0;
  SteeringStack steering;
  std::chrono::steady_clock::time_point deadline;
  int64_t sent = 0;       // tokens sent to the stream
  bool reported = false;  // the row's finishing event was sent
};

BatchEngine::BatchEngine(const Model& model, BatchEngineOptions options)
    : model_(model), options_(options) {
  DESTEIN_CHECK_ARG(options_.max_rows > 0, "BatchEngine: max_rows must be positive, found {}",
                    options_.max_rows);
  DESTEIN_CHECK_ARG(options_.max_queue >= 0, "BatchEngine: max_queue must be >= 0, found {}",
                    options_.max_queue);
  controller_ = std::make_unique<SteeringController>(hooks_, model.config(), model.device());
  DecodeBatchOptions bo;
  bo.hooks = &hooks_;
  bo.pad_id = 0;
  // Each forward row's steering: a prompt-pass row serves the samples of one prompt of one
  // request, which share their steering.
  bo.before_forward = [this](const DecodeForward& f) {
    std::vector<SteeringStack> stacks;
    for (const auto& ids : f.row_ids) stacks.push_back(meta_.at(ids.front()).steering);
    controller_->set_rows(std::move(stacks));
  };
  batch_ = std::make_unique<DecodeBatch>(model, std::move(bo));
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
  DESTEIN_CHECK_ARG(!request.prompts.empty(), "submit: a request needs at least one prompt");
  DESTEIN_CHECK_ARG(request.n > 0, "submit: n must be positive, found {}", request.n);
  DESTEIN_CHECK_ARG(request.max_tokens > 0, "submit: max_tokens must be positive, found {}",
                    request.max_tokens);
  const int64_t rows = static_cast<int64_t>(request.prompts.size()) * request.n;
  DESTEIN_CHECK_ARG(
      rows <= options_.max_rows,
      "submit: the request asks for {} rows (prompts x n) but the server batches at most {}", rows,
      options_.max_rows);
  GenerationOptions checked = request.sampling;
  checked.max_new_tokens = request.max_tokens;
  check_sampling_options(checked, "submit");
  check_decode_prompts(model_, request.prompts, request.max_tokens, "submit");
  for (const auto& p : request.processors)
    DESTEIN_CHECK_ARG(p != nullptr, "submit: a logits processor is null");
  auto stream = std::make_shared<RequestStream>(rows);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (draining_ || stopping_ || static_cast<int64_t>(queue_.size()) >= options_.max_queue)
      return nullptr;
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

void BatchEngine::emit_events() {
  int64_t tokens = 0;
  for (const DecodeRow& row : batch_->rows()) {
    RowMeta& m = meta_.at(row.id);
    if (m.reported) continue;
    const auto n = static_cast<int64_t>(row.generated.size());
    while (m.sent < n) {
      const int64_t token = row.generated[static_cast<size_t>(m.sent++)];
      // The token that reaches max_tokens carries the finish; other finishes come alone.
      const bool last = m.sent == n && row.finish == FinishReason::kLength;
      m.stream->push({m.choice, token, last ? FinishReason::kLength : FinishReason::kNone, {}});
      m.reported = last;
      ++tokens;
    }
    if (!m.reported && row.finish != FinishReason::kNone) {
      m.stream->push({m.choice, -1, row.finish, row.error});
      m.reported = true;
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.generated_tokens += tokens;
}

void BatchEngine::admit(std::vector<Pending>& taking) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<DecodeRowSpec> specs;
  std::vector<int64_t> ids;
  int64_t rows_total = 0, prompts = 0, prompt_tokens = 0;
  for (Pending& pending : taking) {
    EngineRequest& req = pending.request;
    const int64_t choices = pending.stream->choices();
    if (pending.stream->cancelled() || now >= req.deadline) {
      const FinishReason why =
          pending.stream->cancelled() ? FinishReason::kCancelled : FinishReason::kTimeout;
      for (int64_t c = 0; c < choices; ++c) pending.stream->push({c, -1, why, {}});
      std::lock_guard<std::mutex> lock(mutex_);
      admitted_rows_ -= choices;
      continue;
    }
    rows_total += choices;
    GenerationOptions sampling = req.sampling;
    sampling.max_new_tokens = req.max_tokens;
    for (size_t p = 0; p < req.prompts.size(); ++p) {
      // The samples of one prompt share its prompt pass.
      const int64_t group = next_row_id_;
      ++prompts;
      prompt_tokens += static_cast<int64_t>(req.prompts[p].size());
      for (int64_t s = 0; s < req.n; ++s) {
        DecodeRowSpec spec;
        spec.id = next_row_id_++;
        spec.prompt = req.prompts[p];
        spec.sampling = sampling;
        spec.rng = detail::row_stream(req.sampling.seed, static_cast<int64_t>(p), s);
        spec.processors = req.processors;
        spec.prefill_group = group;
        meta_[spec.id] = RowMeta{pending.stream, static_cast<int64_t>(p) * req.n + s, req.steering,
                                 req.deadline};
        ids.push_back(spec.id);
        specs.push_back(std::move(spec));
      }
    }
  }
  if (specs.empty()) return;
  try {
    batch_->add(std::move(specs));
  } catch (const std::exception& e) {
    for (Pending& pending : taking) {
      if (pending.stream->cancelled()) continue;
      for (int64_t c = 0; c < pending.stream->choices(); ++c)
        pending.stream->push({c, -1, FinishReason::kError, e.what()});
    }
    for (int64_t id : ids) meta_.erase(id);
    std::lock_guard<std::mutex> lock(mutex_);
    admitted_rows_ -= rows_total;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.prefills += prompts;
    ++stats_.prefill_passes;
    stats_.prompt_tokens += prompt_tokens;
  }
  emit_events();
}

void BatchEngine::step() {
  const int64_t B = static_cast<int64_t>(batch_->rows().size());
  try {
    batch_->step();
  } catch (const std::exception&) {
    emit_events();  // every row ended with kError, the message its error
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.forwards;
    stats_.rows_forwarded += B;
    size_t bucket = 0;
    while ((int64_t{1} << bucket) < B && bucket + 1 < stats_.rows_per_forward_buckets.size())
      ++bucket;
    ++stats_.rows_per_forward_buckets[bucket];
  }
  emit_events();
}

void BatchEngine::remove_finished() {
  const auto now = std::chrono::steady_clock::now();
  const auto& rows = batch_->rows();
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].finish != FinishReason::kNone) continue;
    const RowMeta& m = meta_.at(rows[i].id);
    FinishReason why = FinishReason::kNone;
    if (m.stream->cancelled())
      why = FinishReason::kCancelled;
    else if (m.stream->stop_requested(m.choice))
      why = FinishReason::kStopped;
    else if (now >= m.deadline)
      why = FinishReason::kTimeout;
    if (why != FinishReason::kNone) batch_->finish(i, why);
  }
  emit_events();
  int64_t removed = 0;
  for (const DecodeRow& r : rows) {
    if (r.finish == FinishReason::kNone) continue;
    meta_.erase(r.id);
    ++removed;
  }
  if (removed == 0) return;
  batch_->remove_finished();
  std::lock_guard<std::mutex> lock(mutex_);
  admitted_rows_ -= removed;
  stats_.active_rows = static_cast<int64_t>(batch_->rows().size());
}

void BatchEngine::run() {
  while (true) {
    std::vector<Pending> taking;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !batch_->rows().empty(); });
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
    if (!taking.empty()) {
      admit(taking);
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_rows = static_cast<int64_t>(batch_->rows().size());
    }
    remove_finished();
    if (!batch_->rows().empty()) {
      step();
      remove_finished();
    }
  }
  // Stopped: whatever still runs or waits ends as cancelled, so that no caller waits forever.
  for (const DecodeRow& r : batch_->rows()) {
    const RowMeta& m = meta_.at(r.id);
    if (!m.reported) m.stream->push({m.choice, -1, FinishReason::kCancelled, {}});
  }
  batch_.reset();
  meta_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  for (Pending& p : queue_) {
    for (int64_t c = 0; c < p.stream->choices(); ++c)
      p.stream->push({c, -1, FinishReason::kCancelled, {}});
  }
  queue_.clear();
}

}  // namespace destein

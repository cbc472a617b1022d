#include "destein/serve/server.hpp"

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/types.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "destein/serve/batch_engine.hpp"
#include "destein/serve/metrics_registry.hpp"
#include "destein/serve/openai_protocol.hpp"
#include "destein/steer/steering_vectors.hpp"

namespace destein {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A model may write bytes that are not UTF-8 (a byte-level token alone, half a character
// at max_tokens); JSON cannot carry them, so they go out as U+FFFD rather than failing.
std::string wire(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const std::vector<double> kLatencyBounds = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

// httplib 0.11 does not tell a handler that its client went away. The handler's connection
// is the one socket of this process whose peer is the request's remote address and port;
// a zero-byte peek on it then means the client closed it.
int find_client_socket(const httplib::Request& req) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) continue;
    char host[INET6_ADDRSTRLEN] = {0};
    int port = -1;
    if (addr.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
      port = ntohs(a->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
      port = ntohs(a->sin6_port);
    }
    if (port == req.remote_port && req.remote_addr == host) return fd;
  }
  return -1;
}

bool client_gone(int fd) {
  if (fd < 0) return false;
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// One choice of a request as the client sees it.
struct ChoiceState {
  std::vector<int64_t> tokens;
  std::string text;  // decoded, cut at a stop string
  size_t sent = 0;   // bytes of text already streamed
  bool first_chunk = true;
  std::optional<std::string> finish;
  bool stopped_by_string = false;
};

// A submitted request from the HTTP side: turns engine events into text.
struct Job {
  const Tokenizer* tokenizer = nullptr;
  std::shared_ptr<RequestStream> stream;
  std::vector<std::vector<int64_t>> prompts;
  int64_t n = 1;
  std::vector<std::string> stop;
  std::vector<ChoiceState> choices;
  int64_t prompt_tokens = 0;
  bool timed_out = false, cancelled = false;
  std::string error;
  Clock::time_point started;

  // Applies one event; returns the choice it touched.
  int64_t apply(const EngineEvent& ev) {
    ChoiceState& c = choices[static_cast<size_t>(ev.choice)];
    if (c.stopped_by_string) return ev.choice;  // tokens that raced the stop, and its kStopped
    if (ev.token >= 0) {
      c.tokens.push_back(ev.token);
      std::string full = tokenizer->decode_continuation(prompts[static_cast<size_t>(ev.choice / n)], c.tokens);
      size_t cut = std::string::npos;
      for (const auto& s : stop) cut = std::min(cut, full.find(s));
      if (cut != std::string::npos) {
        full.resize(cut);
        c.stopped_by_string = true;
        c.finish = "stop";
        stream->stop_choice(ev.choice);
      }
      c.text = std::move(full);
    }
    if (!c.finish) {
      switch (ev.finished) {
        case FinishReason::kNone: break;
        case FinishReason::kLength: c.finish = "length"; break;
        case FinishReason::kEos:
        case FinishReason::kStopped: c.finish = "stop"; break;
        case FinishReason::kTimeout: timed_out = true; c.finish = "timeout"; break;
        case FinishReason::kCancelled: cancelled = true; c.finish = "cancelled"; break;
        case FinishReason::kError: error = ev.error; c.finish = "error"; break;
      }
    }
    return ev.choice;
  }

  // Text of choice `i` that can be sent now.
  std::string take_delta(size_t i) {
    ChoiceState& c = choices[i];
    size_t upto = c.text.size();
    if (!c.finish) {
      upto = safe_stream_length(c.text, stop);
      // An incomplete byte sequence decodes as U+FFFD until its last byte arrives.
      static const std::string kReplacement = "\xEF\xBF\xBD";
      while (upto >= kReplacement.size() && c.text.compare(upto - kReplacement.size(), kReplacement.size(), kReplacement) == 0) {
        upto -= kReplacement.size();
      }
    }
    if (upto <= c.sent) return {};
    std::string out = c.text.substr(c.sent, upto - c.sent);
    c.sent = upto;
    return out;
  }

  int64_t completion_tokens() const {
    int64_t total = 0;
    for (const auto& c : choices) total += static_cast<int64_t>(c.tokens.size());
    return total;
  }
};

std::string bearer_token(const httplib::Request& req) {
  const std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  return h.rfind(prefix, 0) == 0 ? h.substr(prefix.size()) : std::string();
}

}  // namespace

struct Server::Impl {
  const Model& model;
  const Tokenizer& tokenizer;
  ServerOptions options;
  std::map<std::string, std::shared_ptr<const SteeringVectors>> vectors;
  std::mutex plans_mutex;
  std::map<std::string, std::shared_ptr<const SteeringPlan>> plans;
  std::unique_ptr<BatchEngine> engine;
  MetricsRegistry metrics;
  httplib::Server http;
  std::atomic<int> in_flight{0};
  std::atomic<bool> stop_asked{false};
  std::atomic<uint64_t> next_id{1};
  int64_t started_unix = 0;

  Impl(const Model& m, const Tokenizer& t, ServerOptions o) : model(m), tokenizer(t), options(std::move(o)) {}

  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status();
    res.set_content(wire(error_json(e)), "application/json");
  }

  SteeringStack steering_for(const std::optional<SteeringRequest>& request) {
    if (!request) return {};
    auto it = vectors.find(request->vectors);
    if (it == vectors.end()) {
      std::string known;
      for (const auto& [name, v] : vectors) known += fmt::format("{}\"{}\"", known.empty() ? "" : ", ", name);
      throw ApiError(400,
                     fmt::format("'steering.vectors' names no vectors set of this server: \"{}\" (known: {})",
                                 request->vectors, known.empty() ? "none; start the server with --vectors NAME=PATH" : known),
                     "steering.vectors");
    }
    SteeringOptions o = options.steering_defaults;
    if (request->mode) o.mode = parse_steering_mode(*request->mode);
    if (request->alpha) o.alpha = *request->alpha;
    if (request->positions) o.positions = parse_steering_positions(*request->positions);
    if (request->gate) o.gate = parse_steering_gate(*request->gate);
    if (request->gate_threshold) o.gate_threshold = *request->gate_threshold;
    if (request->top_k_heads) o.top_k_heads = *request->top_k_heads;
    if (o.alpha == 0) return {};  // an exact no-op, as attach_steering treats it
    const std::string key = fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}", request->vectors, steering_mode_name(o.mode),
                                        o.alpha, steering_positions_name(o.positions), steering_gate_name(o.gate),
                                        o.gate_threshold, o.top_k_heads, o.layer_start, o.layer_end);
    std::lock_guard<std::mutex> lock(plans_mutex);
    auto found = plans.find(key);
    if (found != plans.end()) return {found->second};
    std::shared_ptr<const SteeringPlan> plan;
    try {
      plan = make_steering_plan(model, *it->second, o);
    } catch (const std::invalid_argument& e) {
      throw ApiError(400, fmt::format("'steering' cannot be applied with vectors \"{}\": {}", request->vectors, e.what()),
                     "steering");
    }
    if (plans.size() > 256) plans.clear();  // the same plan object lets rows share one edit
    plans[key] = plan;
    return {plan};
  }

  void count_request(const std::string& endpoint, int status, Clock::time_point start) {
    metrics.add("destein_requests_total", {{"endpoint", endpoint}, {"status", std::to_string(status)}});
    metrics.observe("destein_request_duration_seconds", std::chrono::duration<double>(Clock::now() - start).count());
  }

  // Shared by both endpoints: tokenised prompts + sampling + steering -> a running job.
  std::shared_ptr<Job> start_job(const SamplingRequest& r, std::vector<std::vector<int64_t>> prompts,
                                 std::vector<std::string> stop, Clock::time_point started) {
    if (engine->draining()) throw ApiError(503, "the server is shutting down and takes no new requests", {}, "server_error");
    if (!r.model.empty() && r.model != options.model_name) {
      throw ApiError(404, fmt::format("'model' must be \"{}\" (the model this server runs), found \"{}\"", options.model_name, r.model),
                     "model", "model_not_found");
    }
    const int64_t rows = static_cast<int64_t>(prompts.size()) * r.n;
    if (rows > options.max_rows) {
      throw ApiError(400, fmt::format("'n' x prompts = {} rows, more than this server's limit of {} per request", rows, options.max_rows), "n");
    }
    for (size_t p = 0; p < prompts.size(); ++p) {
      if (prompts[p].empty()) throw ApiError(400, fmt::format("prompt {} is empty: it needs at least one token", p), "prompt");
      const int64_t limit = model.config().max_positions;
      if (static_cast<int64_t>(prompts[p].size()) + r.max_tokens > limit) {
        throw ApiError(400,
                       fmt::format("'max_tokens' {} with a prompt of {} tokens is past the model's {} positions "
                                   "(ask for at most {} tokens)",
                                   r.max_tokens, prompts[p].size(), limit,
                                   std::max<int64_t>(0, limit - static_cast<int64_t>(prompts[p].size()))),
                       "max_tokens");
      }
    }
    EngineRequest req;
    req.prompts = prompts;
    req.n = r.n;
    req.max_tokens = r.max_tokens;
    req.sampling.do_sample = r.temperature > 0;
    req.sampling.temperature = r.temperature > 0 ? r.temperature : 1.0;
    req.sampling.top_k = r.top_k;
    req.sampling.top_p = r.top_p;
    req.sampling.seed = r.seed ? *r.seed : std::random_device{}();
    req.sampling.stop_at_eos = !r.ignore_eos;
    req.steering = steering_for(r.steering);
    req.deadline = started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.request_timeout_s));
    auto job = std::make_shared<Job>();
    job->tokenizer = &tokenizer;
    job->prompts = std::move(prompts);
    job->n = r.n;
    job->stop = std::move(stop);
    job->started = started;
    for (const auto& p : job->prompts) job->prompt_tokens += static_cast<int64_t>(p.size()) * r.n;
    job->choices.resize(static_cast<size_t>(rows));
    try {
      job->stream = engine->submit(std::move(req));
    } catch (const std::invalid_argument& e) {
      throw ApiError(400, e.what());
    }
    if (!job->stream) {
      if (engine->draining()) throw ApiError(503, "the server is shutting down and takes no new requests", {}, "server_error");
      throw ApiError(429, fmt::format("the server is busy: {} requests are already waiting; retry in a moment",
                                      options.max_queue),
                     {}, "rate_limit_error");
    }
    return job;
  }

  void finish_errors(const Job& job) {
    if (!job.error.empty()) throw ApiError(500, "generation failed: " + job.error, {}, "server_error");
    if (job.timed_out) {
      throw ApiError(504, fmt::format("the request took longer than the server's limit of {} s", options.request_timeout_s), {},
                     "timeout_error");
    }
  }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    const auto started = Clock::now();
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    ++in_flight;
    struct Leave {
      std::atomic<int>& n;
      ~Leave() { --n; }
    } leave{in_flight};
    try {
      if (options.api_key && !api_key_matches(bearer_token(req), *options.api_key)) {
        throw ApiError(401, "missing or wrong API key: send \"Authorization: Bearer KEY\"", {}, "authentication_error");
      }
      SamplingRequest sampling;
      std::vector<std::vector<int64_t>> prompts;
      std::vector<std::string> stop;
      if (chat) {
        ChatRequest r = parse_chat_request(req.body);
        if (r.max_tokens < 0) r.max_tokens = options.default_chat_max_tokens;
        ChatPrompt prompt = render_chat(options.chat_template, r.messages, tokenizer);
        const int64_t room = model.config().max_positions - static_cast<int64_t>(prompt.ids.size());
        if (r.max_tokens == options.default_chat_max_tokens && room > 0) r.max_tokens = std::min(r.max_tokens, room);
        prompts.push_back(std::move(prompt.ids));
        stop = r.stop;
        stop.insert(stop.end(), prompt.stop.begin(), prompt.stop.end());
        sampling = r;
      } else {
        CompletionRequest r = parse_completion_request(req.body);
        for (const auto& p : r.prompts) prompts.push_back(tokenizer.encode_prompt(p));
        stop = r.stop;
        sampling = r;
      }
      auto job = start_job(sampling, std::move(prompts), std::move(stop), started);
      const std::string id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++);
      const int64_t created = static_cast<int64_t>(std::time(nullptr));
      const int client_fd = find_client_socket(req);
      if (sampling.stream) {
        stream_job(res, job, id, created, chat, sampling.include_usage, client_fd, endpoint);
        return;
      }
      EngineEvent ev;
      bool waiting = false;
      auto next_check = Clock::now();
      while (true) {
        // Whether tokens arrive or not, look at the client every 200 ms.
        if (Clock::now() >= next_check) {
          if (client_gone(client_fd)) job->stream->cancel();
          next_check = Clock::now() + std::chrono::milliseconds(200);
        }
        if (job->stream->next_for(ev, std::chrono::milliseconds(200), waiting)) {
          job->apply(ev);
          continue;
        }
        if (!waiting) break;
      }
      if (job->cancelled) {
        res.status = 499;  // nginx's "client closed request": nobody reads it
        count_request(endpoint, 499, started);
        return;
      }
      finish_errors(*job);
      std::vector<ChoiceResult> choices;
      for (const auto& c : job->choices) choices.push_back({c.text, c.finish.value_or("stop")});
      const Usage usage{job->prompt_tokens, job->completion_tokens()};
      const json body = chat ? chat_response(id, created, options.model_name, choices, usage)
                             : completion_response(id, created, options.model_name, choices, usage);
      res.set_content(wire(body), "application/json");
      count_request(endpoint, 200, started);
    } catch (const ApiError& e) {
      send_error(res, e);
      count_request(endpoint, e.status(), started);
      if (e.status() == 429) res.set_header("Retry-After", "1");
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, fmt::format("internal error: {}", e.what()), {}, "server_error"));
      count_request(endpoint, 500, started);
    }
  }

  void stream_job(httplib::Response& res, std::shared_ptr<Job> job, const std::string& id, int64_t created, bool chat,
                  bool include_usage, int client_fd, const std::string& endpoint) {
    res.set_header("Cache-Control", "no-cache");
    // The in-flight count covers the streaming too: a drain waits for the last chunk.
    ++in_flight;
    auto done = std::make_shared<bool>(false);
    const std::string model_name = options.model_name;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, id, created, chat, include_usage, client_fd, done, model_name, endpoint](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string line = "data: " + wire(j) + "\n\n";
            return sink.write(line.data(), line.size());
          };
          EngineEvent ev;
          bool waiting = false;
          if (job->stream->next_for(ev, std::chrono::milliseconds(200), waiting)) {
            const size_t i = static_cast<size_t>(job->apply(ev));
            ChoiceState& c = job->choices[i];
            const std::string delta = job->take_delta(i);
            std::optional<std::string> finish = c.finish;
            if (finish && (*finish == "cancelled")) return true;
            if (finish && (*finish == "timeout" || *finish == "error")) {
              // Headers are gone: the error travels as an event, as OpenAI streams do.
              const ApiError e = job->timed_out ? ApiError(504, fmt::format("the request took longer than the server's limit of {} s", options.request_timeout_s), {}, "timeout_error")
                                                : ApiError(500, "generation failed: " + job->error, {}, "server_error");
              send(error_json(e));
              return true;
            }
            if (!delta.empty() || finish || c.first_chunk) {
              const json chunk = chat ? chat_chunk(id, created, model_name, static_cast<int64_t>(i), delta, finish, c.first_chunk)
                                      : completion_chunk(id, created, model_name, static_cast<int64_t>(i), delta, finish);
              c.first_chunk = false;
              if (!send(chunk)) {
                job->stream->cancel();
                return false;
              }
            }
            return true;
          }
          if (waiting) {
            if (client_gone(client_fd)) {
              job->stream->cancel();
              return false;
            }
            return true;
          }
          // Every choice finished.
          if (include_usage) {
            const int64_t pt = job->prompt_tokens, ct = job->completion_tokens();
            send({{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                  {"model", model_name}, {"choices", json::array()},
                  {"usage", {{"prompt_tokens", pt}, {"completion_tokens", ct}, {"total_tokens", pt + ct}}}});
          }
          const std::string end = "data: [DONE]\n\n";
          sink.write(end.data(), end.size());
          sink.done();
          return true;
        },
        [this, job, done, endpoint](bool success) {
          if (!success || job->cancelled) job->stream->cancel();
          count_request(endpoint, success && !job->cancelled ? 200 : 499, job->started);
          --in_flight;
        });
  }

  void routes() {
    http.set_payload_max_length(options.max_body_bytes);
    const int threads = options.http_threads > 0 ? options.http_threads
                                                 : static_cast<int>(options.max_rows + options.max_queue + 8);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(wire(json{{"status", engine->draining() ? "draining" : "ok"}}), "application/json");
      if (engine->draining()) res.status = 503;
    });
    http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (options.api_key && !api_key_matches(bearer_token(req), *options.api_key)) {
        send_error(res, ApiError(401, "missing or wrong API key: send \"Authorization: Bearer KEY\"", {}, "authentication_error"));
        return;
      }
      json names = json::array();
      for (const auto& [name, v] : vectors) names.push_back(name);
      json model_entry = {{"id", options.model_name}, {"object", "model"}, {"created", started_unix},
                          {"owned_by", "destein"}, {"steering_vectors", names}};
      res.set_content(wire(json{{"object", "list"}, {"data", json::array({model_entry})}}), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      const BatchEngineStats s = engine->stats();
      metrics.set("destein_queue_depth", static_cast<double>(s.queued));
      metrics.set("destein_active_rows", static_cast<double>(s.active_rows));
      metrics.set("destein_prompt_tokens_total", static_cast<double>(s.prompt_tokens));
      metrics.set("destein_generated_tokens_total", static_cast<double>(s.generated_tokens));
      metrics.set("destein_prefills_total", static_cast<double>(s.prefills));
      metrics.set("destein_prefill_passes_total", static_cast<double>(s.prefill_passes));
      metrics.set("destein_decode_steps_total", static_cast<double>(s.forwards));
      // The engine's last bucket is everything above 2^14 rows: the +Inf bucket.
      std::vector<double> buckets(s.rows_per_forward_buckets.begin(), s.rows_per_forward_buckets.end());
      metrics.set_histogram("destein_rows_per_decode_step", buckets, static_cast<double>(s.rows_forwarded));
      res.set_content(metrics.render(), "text/plain; version=0.0.4");
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, false); });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, true); });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string message = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        message = fmt::format("internal error: {}", e.what());
      } catch (...) {
      }
      res.status = 500;
      res.set_content(wire(error_json(ApiError(500, message, {}, "server_error"))), "application/json");
    });
    // httplib answers some failures itself (413 for a large body, 404, 400 for a malformed
    // request line) with an empty body: give them OpenAI's error object.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message;
      if (res.status == 413) message = "the request body is larger than the server's limit (--max-body-bytes)";
      else if (res.status == 404) message = fmt::format("no endpoint {} {} (see GET /v1/models, POST /v1/completions, POST /v1/chat/completions)", req.method, req.path);
      else message = fmt::format("HTTP {}", res.status);
      res.set_content(wire(error_json(ApiError(res.status, message))), "application/json");
    });
  }
};

Server::Server(const Model& model, const Tokenizer& tokenizer, ServerOptions options)
    : impl_(std::make_unique<Impl>(model, tokenizer, std::move(options))) {
  Impl& s = *impl_;
  for (const auto& [name, path] : s.options.vectors) {
    if (name.empty() || s.vectors.count(name)) {
      throw std::invalid_argument(fmt::format("vectors name '{}' for {} is empty or given twice (expected --vectors NAME=PATH with distinct names)", name, path));
    }
    auto v = std::make_shared<SteeringVectors>(load_steering_vectors(path));
    check_vectors_match_model(*v, model.config(), path);
    // The defaults must give a plan for every set; a misfit shows now, not at a request.
    try {
      make_steering_plan(model, *v, s.options.steering_defaults);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("{}: the default steering options do not fit: {}", path, e.what()));
    }
    s.vectors[name] = std::move(v);
  }
  s.metrics.describe_counter("destein_requests_total", "HTTP requests answered, by endpoint and status");
  s.metrics.describe_counter("destein_prompt_tokens_total", "prompt tokens prefilled");
  s.metrics.describe_counter("destein_generated_tokens_total", "tokens generated");
  s.metrics.describe_counter("destein_prefills_total", "prompts prefilled");
  s.metrics.describe_counter("destein_prefill_passes_total", "forward passes that prefilled them");
  s.metrics.describe_counter("destein_decode_steps_total", "batched decode steps run");
  s.metrics.describe_gauge("destein_queue_depth", "requests waiting for rows");
  s.metrics.describe_gauge("destein_active_rows", "rows in the decode batch");
  std::vector<double> row_bounds;
  for (int i = 0; i < 15; ++i) row_bounds.push_back(static_cast<double>(int64_t{1} << i));
  s.metrics.describe_histogram("destein_rows_per_decode_step", "rows decoded together per forward", row_bounds);
  s.metrics.describe_histogram("destein_request_duration_seconds", "time from request to last byte of the answer", kLatencyBounds);
  s.engine = std::make_unique<BatchEngine>(model, BatchEngineOptions{s.options.max_rows, s.options.max_queue});
  s.started_unix = static_cast<int64_t>(std::time(nullptr));
  s.routes();
}

Server::~Server() {
  impl_->http.stop();
}

int Server::bind() {
  Impl& s = *impl_;
  int port = s.options.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.options.host);
  } else if (!s.http.bind_to_port(s.options.host, port)) {
    port = -1;
  }
  if (port < 0) {
    throw std::runtime_error(fmt::format("cannot listen on {}:{} (address in use, or not an address of this machine)",
                                         s.options.host, s.options.port));
  }
  s.options.port = port;
  return port;
}

void Server::serve(const std::function<bool()>& should_stop) {
  Impl& s = *impl_;
  std::thread listener([&s] { s.http.listen_after_bind(); });
  while (!s.stop_asked && !(should_stop && should_stop())) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // Drain: new requests get 503 while the queued and running ones finish and are sent.
  s.engine->drain();
  while (!s.engine->idle() || s.in_flight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  s.http.stop();
  listener.join();
}

void Server::stop() { impl_->stop_asked = true; }

}  // namespace destein

#include "destein/serve/server.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "destein/runtime/device.hpp"
#include "destein/runtime/logits_processor.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "serve/batch_engine.hpp"
#include "serve/chat_rendering.hpp"
#include "serve/http_server.hpp"
#include "serve/metrics_registry.hpp"
#include "serve/openai_protocol.hpp"

namespace destein {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A model may write bytes that are not UTF-8 (a byte-level token alone, half a character
// at max_tokens); JSON cannot carry them, so they go out as U+FFFD rather than failing.
std::string wire(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const std::vector<double> kLatencyBounds = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                            2.5,  5,     10,   30,  60,   120, 300};

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
      std::string full =
          tokenizer->decode_continuation(prompts[static_cast<size_t>(ev.choice / n)], c.tokens);
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
        case FinishReason::kNone:
          break;
        case FinishReason::kLength:
          c.finish = "length";
          break;
        case FinishReason::kEos:
        case FinishReason::kStopped:
          c.finish = "stop";
          break;
        case FinishReason::kTimeout:
          timed_out = true;
          c.finish = "timeout";
          break;
        case FinishReason::kCancelled:
          cancelled = true;
          c.finish = "cancelled";
          break;
        case FinishReason::kError:
          error = ev.error;
          c.finish = "error";
          break;
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
      while (upto >= kReplacement.size() &&
             c.text.compare(upto - kReplacement.size(), kReplacement.size(), kReplacement) == 0) {
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

std::string bearer_token(const http::HttpRequest& req) {
  const std::string* h = req.header("authorization");
  return h ? bearer_credentials(*h) : std::string();
}

// The endpoints and the one method each takes.
struct Route {
  const char* path;
  const char* method;
  bool needs_key;  // with --api-key-file
};
constexpr Route kRoutes[] = {{"/health", "GET", false},
                             {"/metrics", "GET", false},
                             {"/v1/models", "GET", true},
                             {"/v1/completions", "POST", true},
                             {"/v1/chat/completions", "POST", true}};

http::HttpResponse json_response(int status, const json& body) {
  http::HttpResponse r;
  r.status = status;
  r.body = wire(body);
  return r;
}

http::HttpResponse error_response(const ApiError& e) {
  http::HttpResponse r = json_response(e.status(), error_json(e));
  if (e.status() == 429) r.headers.emplace_back("Retry-After", "1");
  if (e.status() == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

}  // namespace

struct Server::Impl {
  const Model& model;
  const Tokenizer& tokenizer;
  ServerOptions options;
  std::map<std::string, std::shared_ptr<const SteeringVectors>> vectors;
  std::mutex plans_mutex;
  std::map<std::string, std::shared_ptr<const SteeringPlan>> plans;
  // Named decoding-time methods. A chain keeps its per-row state under the engine's row
  // ids and is only called from the engine's thread, so requests share it.
  std::map<std::string, LogitsProcessorChain> methods;
  std::unique_ptr<BatchEngine> engine;
  MetricsRegistry metrics;
  std::atomic<bool> stop_asked{false};
  std::function<bool()> should_stop;  // set by serve() before the first request
  std::atomic<uint64_t> next_id{1};
  int64_t started_unix = 0;
  // A prompt longer than this many bytes has more tokens than the model has positions
  // (each token stands for at most this many bytes / max_positions of text): refused
  // before the tokenizer sees it.
  size_t max_prompt_bytes = 0;
  // Declared last: destroyed first, while the engine its handlers use is still there.
  std::unique_ptr<http::HttpServer> http;

  Impl(const Model& m, const Tokenizer& t, ServerOptions o)
      : model(m), tokenizer(t), options(std::move(o)) {}

  bool refusing() const { return stop_asked || (should_stop && should_stop()); }

  const LogitsProcessorChain& method_for(const std::string& name, bool steered) const {
    // As `destein generate`: a method's processors read the unsteered model's scores.
    if (steered) {
      throw ApiError(400,
                     "'method' and 'steering' do not combine: a request takes a decoding-time "
                     "method or steering",
                     "method");
    }
    auto it = methods.find(name);
    if (it == methods.end()) {
      std::string known;
      for (const auto& [n, chain] : methods)
        known += fmt::format("{}\"{}\"", known.empty() ? "" : ", ", n);
      throw ApiError(
          400,
          fmt::format(
              "'method' names no method of this server: \"{}\" (known: {})", name,
              known.empty() ? "none; start the server with a config's methods: list" : known),
          "method");
    }
    return it->second;
  }

  SteeringStack steering_for(const std::optional<SteeringRequest>& request) {
    if (!request) return {};
    auto it = vectors.find(request->vectors);
    if (it == vectors.end()) {
      std::string known;
      for (const auto& [name, v] : vectors)
        known += fmt::format("{}\"{}\"", known.empty() ? "" : ", ", name);
      throw ApiError(
          400,
          fmt::format("'steering.vectors' names no vectors set of this server: \"{}\" (known: {})",
                      request->vectors,
                      known.empty() ? "none; start the server with --vectors NAME=PATH" : known),
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
    const std::string key =
        fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}", request->vectors, steering_mode_name(o.mode),
                    o.alpha, steering_positions_name(o.positions), steering_gate_name(o.gate),
                    o.gate_threshold, o.top_k_heads, o.layer_start, o.layer_end);
    std::lock_guard<std::mutex> lock(plans_mutex);
    auto found = plans.find(key);
    if (found != plans.end()) return {found->second};
    std::shared_ptr<const SteeringPlan> plan;
    try {
      plan = make_steering_plan(model, *it->second, o);
    } catch (const std::invalid_argument& e) {
      throw ApiError(400,
                     fmt::format("'steering' cannot be applied with vectors \"{}\": {}",
                                 request->vectors, e.what()),
                     "steering");
    }
    if (plans.size() > 256) plans.clear();  // the same plan object lets rows share one edit
    plans[key] = plan;
    return {plan};
  }

  void count_request(const std::string& endpoint, int status, Clock::time_point start) {
    metrics.add("destein_requests_total",
                {{"endpoint", endpoint}, {"status", std::to_string(status)}});
    metrics.observe("destein_request_duration_seconds",
                    std::chrono::duration<double>(Clock::now() - start).count());
  }

  // Shared by both endpoints: tokenised prompts + sampling + steering -> a running job.
  std::shared_ptr<Job> start_job(const SamplingRequest& r,
                                 std::vector<std::vector<int64_t>> prompts,
                                 std::vector<std::string> stop, Clock::time_point started) {
    if (engine->draining())
      throw ApiError(503, "the server is shutting down and takes no new requests", {},
                     "server_error");
    if (!r.model.empty() && r.model != options.model_name) {
      throw ApiError(
          404,
          fmt::format("'model' must be \"{}\" (the model this server runs), found \"{}\"",
                      options.model_name, r.model),
          "model", "model_not_found");
    }
    const int64_t rows = static_cast<int64_t>(prompts.size()) * r.n;
    if (rows > options.max_rows) {
      throw ApiError(
          400,
          fmt::format("'n' x prompts = {} rows, more than this server's limit of {} per request",
                      rows, options.max_rows),
          "n");
    }
    for (size_t p = 0; p < prompts.size(); ++p) {
      if (prompts[p].empty())
        throw ApiError(400, fmt::format("prompt {} is empty: it needs at least one token", p),
                       "prompt");
      const int64_t limit = model.config().max_positions;
      if (static_cast<int64_t>(prompts[p].size()) + r.max_tokens > limit) {
        throw ApiError(
            400,
            fmt::format(
                "'max_tokens' {} with a prompt of {} tokens is past the model's {} positions "
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
    if (!r.method.empty()) req.processors = method_for(r.method, r.steering.has_value());
    req.steering = steering_for(r.steering);
    if (!r.logit_bias.empty()) {
      const int64_t vocab = model.config().vocab_size;
      for (const auto& [id, bias] : r.logit_bias) {
        if (id >= vocab) {
          throw ApiError(
              400,
              fmt::format("'logit_bias' names token {}, past the model's vocabulary of {} tokens",
                          id, vocab),
              fmt::format("logit_bias.{}", id));
        }
      }
      req.processors.push_back(std::make_shared<LogitBiasProcessor>(r.logit_bias));
    }
    req.deadline = started + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(options.request_timeout_s));
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
      if (engine->draining())
        throw ApiError(503, "the server is shutting down and takes no new requests", {},
                       "server_error");
      throw ApiError(
          429,
          fmt::format("the server is busy: {} requests are already waiting; retry in a moment",
                      options.max_queue),
          {}, "rate_limit_error");
    }
    return job;
  }

  void finish_errors(const Job& job) {
    if (!job.error.empty())
      throw ApiError(500, "generation failed: " + job.error, {}, "server_error");
    if (job.timed_out) {
      throw ApiError(504,
                     fmt::format("the request took longer than the server's limit of {} s",
                                 options.request_timeout_s),
                     {}, "timeout_error");
    }
  }

  void check_prompt_bytes(size_t bytes, const std::string& what, const std::string& param) const {
    if (bytes <= max_prompt_bytes) return;
    throw ApiError(
        400,
        fmt::format("{} is {} bytes, more than the {} tokens the model can hold could cover "
                    "(at most {} bytes); shorten it",
                    what, bytes, model.config().max_positions, max_prompt_bytes),
        param);
  }

  http::HttpResponse handle(const http::HttpRequest& req, http::HttpExchange& exchange, bool chat) {
    const auto started = Clock::now();
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    try {
      SamplingRequest sampling;
      std::vector<std::vector<int64_t>> prompts;
      std::vector<std::string> stop;
      // Every bound that needs no tokenizer is checked before it runs: a long prompt or
      // many of them cost what a short refusal costs.
      auto check_rows = [&](size_t count, int64_t n) {
        if (static_cast<int64_t>(count) * n > options.max_rows) {
          throw ApiError(
              400,
              fmt::format(
                  "'n' x prompts = {} rows, more than this server's limit of {} per request",
                  static_cast<int64_t>(count) * n, options.max_rows),
              "n");
        }
      };
      if (chat) {
        ChatRequest r = parse_chat_request(req.body);
        size_t bytes = 0;
        for (const auto& m : r.messages) bytes += m.content.size();
        check_prompt_bytes(bytes, "the text of 'messages'", "messages");
        check_rows(1, r.n);
        if (r.max_tokens < 0) r.max_tokens = options.default_chat_max_tokens;
        ChatPrompt prompt = render_chat(options.chat_template, r.messages, tokenizer);
        const int64_t room = model.config().max_positions - static_cast<int64_t>(prompt.ids.size());
        if (r.max_tokens == options.default_chat_max_tokens && room > 0)
          r.max_tokens = std::min(r.max_tokens, room);
        prompts.push_back(std::move(prompt.ids));
        stop = r.stop;
        stop.insert(stop.end(), prompt.stop.begin(), prompt.stop.end());
        sampling = r;
      } else {
        CompletionRequest r = parse_completion_request(req.body);
        check_rows(r.prompts.size(), r.n);
        for (size_t i = 0; i < r.prompts.size(); ++i) {
          check_prompt_bytes(r.prompts[i].size(), fmt::format("prompt {}", i), "prompt");
        }
        for (const auto& p : r.prompts) prompts.push_back(tokenizer.encode_prompt(p));
        stop = r.stop;
        sampling = r;
      }
      auto job = start_job(sampling, std::move(prompts), std::move(stop), started);
      const std::string id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++);
      const int64_t created = static_cast<int64_t>(std::time(nullptr));
      if (sampling.stream)
        return stream_job(job, id, created, chat, sampling.include_usage, endpoint);
      EngineEvent ev;
      bool waiting = false;
      auto next_check = Clock::now();
      while (true) {
        // Whether tokens arrive or not, look at the client every 200 ms.
        if (Clock::now() >= next_check) {
          if (exchange.client_gone()) job->stream->cancel();
          next_check = Clock::now() + std::chrono::milliseconds(200);
        }
        if (job->stream->next_for(ev, std::chrono::milliseconds(200), waiting)) {
          job->apply(ev);
          continue;
        }
        if (!waiting) break;
      }
      if (job->cancelled) {
        count_request(endpoint, 499, started);
        return json_response(499,
                             json::object());  // nginx's "client closed request": nobody reads it
      }
      finish_errors(*job);
      std::vector<ChoiceResult> choices;
      for (const auto& c : job->choices) choices.push_back({c.text, c.finish.value_or("stop")});
      const Usage usage{job->prompt_tokens, job->completion_tokens()};
      const json body = chat ? chat_response(id, created, options.model_name, choices, usage)
                             : completion_response(id, created, options.model_name, choices, usage);
      count_request(endpoint, 200, started);
      return json_response(200, body);
    } catch (const ApiError& e) {
      count_request(endpoint, e.status(), started);
      return error_response(e);
    } catch (const std::exception& e) {
      count_request(endpoint, 500, started);
      return error_response(
          ApiError(500, fmt::format("internal error: {}", e.what()), {}, "server_error"));
    }
  }

  http::HttpResponse stream_job(std::shared_ptr<Job> job, const std::string& id, int64_t created,
                                bool chat, bool include_usage, const std::string& endpoint) {
    http::HttpResponse res;
    res.content_type = "text/event-stream";
    res.headers.emplace_back("Cache-Control", "no-cache");
    // Runs on the worker after the head is sent; the server's busy count covers it, so a
    // drain waits for the last chunk.
    res.stream = [this, job, id, created, chat, include_usage, endpoint](http::HttpExchange& ex) {
      auto send = [&](const json& j) { return ex.write("data: " + wire(j) + "\n\n"); };
      bool delivered = true;
      EngineEvent ev;
      bool waiting = false;
      while (true) {
        if (job->stream->next_for(ev, std::chrono::milliseconds(200), waiting)) {
          const size_t i = static_cast<size_t>(job->apply(ev));
          ChoiceState& c = job->choices[i];
          const std::string delta = job->take_delta(i);
          const std::optional<std::string> finish = c.finish;
          if (finish && *finish == "cancelled") continue;
          if (finish && (*finish == "timeout" || *finish == "error")) {
            // Headers are gone: the error travels as an event, as OpenAI streams do.
            const ApiError e =
                job->timed_out
                    ? ApiError(
                          504,
                          fmt::format("the request took longer than the server's limit of {} s",
                                      options.request_timeout_s),
                          {}, "timeout_error")
                    : ApiError(500, "generation failed: " + job->error, {}, "server_error");
            send(error_json(e));
            continue;
          }
          if (!delta.empty() || finish || c.first_chunk) {
            const json chunk =
                chat ? chat_chunk(id, created, options.model_name, static_cast<int64_t>(i), delta,
                                  finish, c.first_chunk)
                     : completion_chunk(id, created, options.model_name, static_cast<int64_t>(i),
                                        delta, finish);
            c.first_chunk = false;
            if (!send(chunk)) {
              job->stream->cancel();
              delivered = false;
              break;
            }
          }
          continue;
        }
        if (waiting) {
          if (ex.client_gone()) {
            job->stream->cancel();
            delivered = false;
            break;
          }
          continue;
        }
        // Every choice finished.
        if (include_usage) {
          const int64_t pt = job->prompt_tokens, ct = job->completion_tokens();
          send({{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", options.model_name},
                {"choices", json::array()},
                {"usage",
                 {{"prompt_tokens", pt}, {"completion_tokens", ct}, {"total_tokens", pt + ct}}}});
        }
        delivered = ex.write("data: [DONE]\n\n");
        break;
      }
      if (!delivered) job->stream->cancel();
      count_request(endpoint, delivered && !job->cancelled ? 200 : 499, job->started);
    };
    return res;
  }

  // Refusals decided from the head, before any of the body is read.
  std::optional<http::HttpResponse> check_head(const http::HttpRequest& req) const {
    const Route* route = nullptr;
    for (const Route& r : kRoutes) {
      if (req.path == r.path) route = &r;
    }
    if (!route) {
      return error_response(
          ApiError(404,
                   fmt::format("no endpoint {} {} (see GET /v1/models, POST /v1/completions, "
                               "POST /v1/chat/completions)",
                               req.method.substr(0, 20), req.path.substr(0, 100)),
                   {}, "not_found_error"));
    }
    if (req.method != route->method) {
      http::HttpResponse r = error_response(ApiError(
          405,
          fmt::format("{} takes {}, not {}", route->path, route->method, req.method.substr(0, 20)),
          {}, "invalid_request_error"));
      r.headers.emplace_back("Allow", route->method);
      return r;
    }
    if (route->needs_key && options.api_key &&
        !api_key_matches(bearer_token(req), *options.api_key)) {
      return error_response(ApiError(401,
                                     "missing or wrong API key: send \"Authorization: Bearer KEY\"",
                                     {}, "authentication_error"));
    }
    return std::nullopt;
  }

  http::HttpResponse answer(const http::HttpRequest& req, http::HttpExchange& exchange) {
    if (req.path == "/health") {
      return json_response(engine->draining() ? 503 : 200,
                           json{{"status", engine->draining() ? "draining" : "ok"}});
    }
    if (req.path == "/v1/models") {
      json names = json::array();
      for (const auto& [name, v] : vectors) names.push_back(name);
      json method_names = json::array();
      for (const auto& [name, chain] : methods) method_names.push_back(name);
      json model_entry = {{"id", options.model_name},  {"object", "model"},
                          {"created", started_unix},   {"owned_by", "destein"},
                          {"steering_vectors", names}, {"methods", method_names}};
      return json_response(200, json{{"object", "list"}, {"data", json::array({model_entry})}});
    }
    if (req.path == "/metrics") {
      const BatchEngineStats s = engine->stats();
      metrics.set("destein_queue_depth", static_cast<double>(s.queued));
      metrics.set("destein_active_rows", static_cast<double>(s.active_rows));
      metrics.set("destein_prompt_tokens_total", static_cast<double>(s.prompt_tokens));
      metrics.set("destein_generated_tokens_total", static_cast<double>(s.generated_tokens));
      metrics.set("destein_prefills_total", static_cast<double>(s.prefills));
      metrics.set("destein_prefill_passes_total", static_cast<double>(s.prefill_passes));
      metrics.set("destein_decode_steps_total", static_cast<double>(s.forwards));
      // The engine's last bucket is everything above 2^14 rows: the +Inf bucket.
      std::vector<double> buckets(s.rows_per_forward_buckets.begin(),
                                  s.rows_per_forward_buckets.end());
      metrics.set_histogram("destein_rows_per_decode_step", buckets,
                            static_cast<double>(s.rows_forwarded));
      http::HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = metrics.render();
      return r;
    }
    return handle(req, exchange, req.path == "/v1/chat/completions");
  }

  void make_http() {
    http::HttpServerOptions o;
    o.limits.max_body_bytes = options.max_body_bytes;
    o.threads = options.http_threads > 0
                    ? options.http_threads
                    : static_cast<int>(options.max_rows + options.max_queue + 8);
    o.max_connections = options.max_connections;
    o.head_timeout_s = options.header_timeout_s;
    o.body_timeout_s = options.body_timeout_s;
    o.idle_timeout_s = options.keep_alive_timeout_s;
    http::HttpHandlers h;
    h.check_head = [this](const http::HttpRequest& req) { return check_head(req); };
    h.handle = [this](const http::HttpRequest& req, http::HttpExchange& ex) {
      return answer(req, ex);
    };
    h.error = [](int status, const std::string& message) {
      return error_response(
          ApiError(status, message, {}, status >= 500 ? "server_error" : "invalid_request_error"));
    };
    h.refusing = [this] { return refusing(); };
    http = std::make_unique<http::HttpServer>(o, h);
  }
};

Server::Server(const Model& model, const Tokenizer& tokenizer, ServerOptions options)
    : impl_(std::make_unique<Impl>(model, tokenizer, std::move(options))) {
  Impl& s = *impl_;
  for (const auto& [name, path] : s.options.vectors) {
    if (name.empty() || s.vectors.count(name)) {
      throw std::invalid_argument(
          fmt::format("vectors name '{}' for {} is empty or given twice (expected --vectors "
                      "NAME=PATH with distinct names)",
                      name, path));
    }
    auto v = std::make_shared<SteeringVectors>(load_steering_vectors(path));
    check_vectors_match_model(*v, model.config(), path);
    // The defaults must give a plan for every set; a misfit shows now, not at a request.
    try {
      make_steering_plan(model, *v, s.options.steering_defaults);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(
          fmt::format("{}: the default steering options do not fit: {}", path, e.what()));
    }
    s.vectors[name] = std::move(v);
  }
  ModelOptions expert_options;  // experts run as the model does
  expert_options.device = model.device();
  expert_options.dtype = model.dtype();
  expert_options.threads = threads();
  expert_options.linear_backend = model.linear_backend();
  for (const auto& [name, method] : s.options.methods) {
    if (name.empty() || s.methods.count(name)) {
      throw std::invalid_argument(
          fmt::format("method name '{}' ({}) is empty or given twice (expected distinct names)",
                      name, method.kind));
    }
    try {
      s.methods[name] = build_decoding_method(method, model, &tokenizer, expert_options);
    } catch (const std::exception& e) {
      throw std::invalid_argument(fmt::format("method '{}': {}", name, e.what()));
    }
  }
  s.metrics.describe_counter("destein_requests_total",
                             "HTTP requests answered, by endpoint and status");
  s.metrics.describe_counter("destein_prompt_tokens_total", "prompt tokens prefilled");
  s.metrics.describe_counter("destein_generated_tokens_total", "tokens generated");
  s.metrics.describe_counter("destein_prefills_total", "prompts prefilled");
  s.metrics.describe_counter("destein_prefill_passes_total", "forward passes that prefilled them");
  s.metrics.describe_counter("destein_decode_steps_total", "batched decode steps run");
  s.metrics.describe_gauge("destein_queue_depth", "requests waiting for rows");
  s.metrics.describe_gauge("destein_active_rows", "rows in the decode batch");
  std::vector<double> row_bounds;
  for (int i = 0; i < 15; ++i) row_bounds.push_back(static_cast<double>(int64_t{1} << i));
  s.metrics.describe_histogram("destein_rows_per_decode_step", "rows decoded together per forward",
                               row_bounds);
  s.metrics.describe_histogram("destein_request_duration_seconds",
                               "time from request to last byte of the answer", kLatencyBounds);
  s.engine = std::make_unique<BatchEngine>(
      model, BatchEngineOptions{s.options.max_rows, s.options.max_queue});
  s.started_unix = static_cast<int64_t>(std::time(nullptr));
  // The longest text one token stands for, from the vocabulary itself. A byte-level BPE
  // consumes at least one byte per token, and each token at most this many; a
  // normalising tokenizer (SentencePiece's NFKC) can shrink a character to a third of
  // its bytes before matching, hence the factor 3 there.
  size_t longest = 1;
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id)
    longest = std::max(longest, tokenizer.decode({id}).size() + 1);
  const size_t shrink = tokenizer.kind() == "gpt2-bpe" ? 1 : 3;
  s.max_prompt_bytes =
      static_cast<size_t>(std::max<int64_t>(1, model.config().max_positions)) * longest * shrink;
  s.make_http();
}

Server::~Server() {
  impl_->http->stop_accepting();
  impl_->http->join();
}

int Server::bind() {
  Impl& s = *impl_;
  const int port = s.http->bind(s.options.host, s.options.port);
  s.options.port = port;
  return port;
}

void Server::serve(const std::function<bool()>& should_stop) {
  Impl& s = *impl_;
  // The reader asks refusing() at every request head: from the instant should_stop turns
  // true, a new request is refused (503), not only from the next poll of this loop.
  s.should_stop = should_stop;
  s.http->start();
  while (!s.refusing()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // Drain: the listening socket closes, queued and running requests finish and are sent.
  s.http->stop_accepting();
  s.engine->drain();
  while (!s.engine->idle() || s.http->busy() > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  s.http->join();
}

void Server::stop() { impl_->stop_asked = true; }

}  // namespace destein

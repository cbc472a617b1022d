// `destein serve` against hostile clients on 127.0.0.1 (issue 27): one test case per row of
// what once crashed it, starved it or slipped past a limit. Clients: curl where it can play
// the part, a raw socket (raw_http_client.hpp) where it cannot. Each case is bounded in
// connections (at most 40 at once) and in time (seconds).
#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "raw_http_client.hpp"
#include "serve_test_support.hpp"

using namespace destein::test;
using Catch::Matchers::Contains;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kTinyLm = std::string(DESTEIN_SOURCE_DIR) + "/models/tiny-lm";

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Whether `signal` is pending for process `pid` (SigPnd or ShdPnd of /proc/PID/status).
bool signal_pending(pid_t pid, int signal) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const unsigned long long bit = 1ULL << (signal - 1);
  while (std::getline(in, line)) {
    if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
      if (std::stoull(line.substr(7), nullptr, 16) & bit) return true;
    }
  }
  return false;
}

std::string post_head(const std::string& path, const std::string& extra_headers) {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
         extra_headers + "\r\n";
}

std::string chunk(const std::string& data) {
  return fmt::format("{:x}\r\n", data.size()) + data + "\r\n";
}

}  // namespace

TEST_CASE("serve hostile: a body nested 60,000 deep is a 400 naming the field, not a crash",
          "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_deep");
  ServeProcess server({"--model", kTinyLm}, dir);
  const std::string deep = std::string(60000, '[') + "\"x\"" + std::string(60000, ']');
  for (const std::string& field : {"prompt", "stop", "steering"}) {
    const std::string body = field == "prompt"
                                 ? "{\"prompt\": " + deep + "}"
                                 : "{\"prompt\": \"x\", \"" + field + "\": " + deep + "}";
    REQUIRE(body.size() > 120000);
    auto r = http("POST", server.url("/v1/completions"), body, dir);
    INFO(field << " -> " << r.status << " " << r.body.substr(0, 300));
    CHECK(r.status == 400);
    CHECK(r.json()["error"]["param"] == field);
    CHECK_THAT(r.body, Contains("more than 32 deep"));
  }
  // Nested messages of a chat request too.
  auto chat = http("POST", server.url("/v1/chat/completions"),
                   R"({"messages": [{"role": "user", "content": )" + deep + "}]}", dir);
  CHECK(chat.status == 400);
  CHECK(http("GET", server.url("/health"), "", dir).status == 200);
  CHECK(server.wait_exit(std::chrono::seconds(0)) == -1);  // still running
}

TEST_CASE(
    "serve hostile: the body limit holds for chunked bodies (413 within seconds, memory bounded)",
    "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_chunked");
  ServeProcess server({"--model", kTinyLm}, dir);  // --max-body-bytes: 1 MiB
  // curl sends a 2 MB body chunked: 413, as with Content-Length.
  const std::string two_mb =
      json{{"prompt", std::string(2'000'000, 'a')}, {"max_tokens", 1}}.dump();
  auto r =
      http("POST", server.url("/v1/completions"), two_mb, dir, "-H 'Transfer-Encoding: chunked'");
  CHECK(r.status == 413);
  CHECK_THAT(r.body, Contains("larger than the server's limit of 1048576 bytes"));
  r = http("POST", server.url("/v1/completions"), two_mb, dir);
  CHECK(r.status == 413);

  // A 50 MB chunked prompt from a raw socket, as fast as the server reads it.
  const long rss_before = resident_kb(server.pid());
  REQUIRE(rss_before > 0);
  RawClient client(server.port());
  REQUIRE(client.connected());
  const auto start = Clock::now();
  std::atomic<bool> sending{true};
  std::atomic<size_t> sent{0};
  std::thread sender([&] {
    client.send(post_head("/v1/completions", "Transfer-Encoding: chunked\r\n") +
                chunk("{\"prompt\": \""));
    const std::string piece = chunk(std::string(64 * 1024, 'a'));
    while (sending && sent < 50u * 1024 * 1024) {
      if (!client.send(piece)) break;
      sent += 64 * 1024;
    }
  });
  long rss_peak = rss_before;
  std::thread watcher([&] {
    while (sending) {
      rss_peak = std::max(rss_peak, resident_kb(server.pid()));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const RawReply reply = client.read_reply(std::chrono::seconds(10));
  const double took = seconds_since(start);
  sending = false;
  watcher.join();
  sender.join();  // the server closes the connection 2 s after its answer at the latest
  INFO("answered in " << took << " s after " << sent << " bytes; RSS " << rss_before << " -> "
                      << rss_peak << " kB");
  CHECK(reply.status == 413);
  CHECK(took < 5);
  CHECK(rss_peak - rss_before < 200 * 1024);
  CHECK(http("GET", server.url("/health"), "", dir).status == 200);

  // Under the body limit but longer than 128 tokens could be: refused before tokenizing.
  const auto t = Clock::now();
  r = http("POST", server.url("/v1/completions"),
           json{{"prompt", std::string(900'000, 'a')}}.dump(), dir);
  CHECK(r.status == 400);
  CHECK_THAT(r.body, Contains("more than the 128 tokens the model can hold"));
  CHECK(seconds_since(t) < 2);
}

TEST_CASE("serve hostile: a missing API key is refused from the headers, before any body is read",
          "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_auth");
  std::ofstream(dir / "key") << "s3cret-key\n";
  ServeProcess server({"--model", kTinyLm, "--api-key-file", (dir / "key").string()}, dir);
  for (const std::string& framing :
       {std::string("Transfer-Encoding: chunked\r\n"), std::string("Content-Length: 900000\r\n")}) {
    RawClient client(server.port());
    // The head of a large body, and none of the body: the answer must come without it.
    REQUIRE(client.send(post_head("/v1/completions", framing)));
    const RawReply reply = client.read_reply(std::chrono::seconds(3));
    INFO(framing << reply.head);
    CHECK(reply.status == 401);
    CHECK_THAT(reply.head, Contains("WWW-Authenticate: Bearer"));
    CHECK_THAT(reply.head, Contains("Connection: close"));
  }
  // Expect: 100-continue with a wrong key: 401 instead of the 100.
  RawClient client(server.port());
  REQUIRE(client.send(
      post_head("/v1/completions",
                "Content-Length: 10\r\nExpect: 100-continue\r\nAuthorization: Bearer no\r\n")));
  CHECK(client.read_reply(std::chrono::seconds(3)).status == 401);
}

TEST_CASE(
    "serve hostile: 40 clients sending headers at 1 byte/s (and 20 idle ones) do not starve a "
    "16-thread server",
    "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_slowloris");
  ServeProcess server({"--model", kTinyLm, "--max-rows", "4", "--max-queue", "4", "--http-threads",
                       "16", "--header-timeout", "4", "--body-timeout", "3"},
                      dir);
  std::vector<std::unique_ptr<RawClient>> slow;
  for (int i = 0; i < 40; ++i) {
    slow.push_back(std::make_unique<RawClient>(server.port()));
    REQUIRE(slow.back()->connected());
  }
  const std::string head = post_head("/v1/completions", "Content-Length: 20\r\n");
  std::atomic<bool> dripping{true};
  std::thread drip([&] {
    for (size_t i = 0; i < head.size() && dripping; ++i) {
      for (auto& c : slow) c->send(std::string(1, head[i]));
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  // 20 kept-alive connections after one request each, idle now: more than the 16 workers.
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 20; ++i) {
    idle.push_back(std::make_unique<RawClient>(server.port()));
    REQUIRE(idle.back()->send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    REQUIRE(idle.back()->read_reply().status == 200);
  }
  std::this_thread::sleep_for(
      std::chrono::milliseconds(1500));  // every slow client holds a connection
  // Normal requests meanwhile: each answered at once.
  for (int i = 0; i < 4; ++i) {
    const auto t = Clock::now();
    auto r = http("POST", server.url("/v1/completions"),
                  R"({"prompt": "The", "max_tokens": 4, "temperature": 0})", dir, "--max-time 5");
    INFO("request " << i << ": " << r.status << " after " << seconds_since(t) << " s");
    CHECK(r.status == 200);
    CHECK(seconds_since(t) < 2);
  }
  // The header deadline (4 s from the first byte) ends every slow client with a 408.
  // (The drip stops at the first answer: a byte sent after the server has closed would
  // draw a reset, which discards an answer not yet read.)
  int timed_out = 0;
  for (auto& c : slow) {
    const RawReply r = c->read_reply(std::chrono::seconds(6));
    dripping = false;
    timed_out += r.status == 408;
  }
  drip.join();
  CHECK(timed_out == 40);

  // The body deadline: a head and 5 of 20 body bytes, then nothing.
  RawClient stalled(server.port());
  REQUIRE(stalled.send(head + "{\"pro"));
  const auto t = Clock::now();
  const RawReply r = stalled.read_reply(std::chrono::seconds(6));
  CHECK(r.status == 408);
  CHECK(seconds_since(t) > 2);
  CHECK_THAT(r.body, Contains("body-timeout"));
}

TEST_CASE("serve hostile: a number past a double's range is a 400 naming the field",
          "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_overflow");
  ServeProcess server({"--model", kTinyLm}, dir);
  auto r =
      http("POST", server.url("/v1/completions"), R"({"prompt": "x", "temperature": 1e400})", dir);
  CHECK(r.status == 400);
  CHECK(r.json()["error"]["param"] == "temperature");
  CHECK_THAT(r.body, Contains("'temperature' holds a number too large"));
}

TEST_CASE("serve hostile: after SIGTERM no request is taken, running ones finish",
          "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_sigterm");
  ServeProcess server({"--model", kTinyLm}, dir);
  const std::string running =
      R"({"prompt": "The", "max_tokens": 100, "temperature": 0.9, "seed": 3, "n": 16, "ignore_eos": true})";
  RawClient keep_alive(server.port());  // a kept-alive connection opened before the signal
  REQUIRE(keep_alive.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  REQUIRE(keep_alive.read_reply().status == 200);
  RawClient first(server.port());
  REQUIRE(first.send(
      post_head("/v1/completions", fmt::format("Content-Length: {}\r\n", running.size())) +
      running));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(server.pid(), SIGTERM);
  // kill() returns before the server has taken the signal: wait until it is no longer
  // pending (/proc/PID/status), which is when its handler runs.
  const auto sent = Clock::now();
  while (seconds_since(sent) < 2 && signal_pending(server.pid(), SIGTERM)) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const auto taken = Clock::now();
  // From then on: refused (503) or no listener, never answered.
  int refused = 0, tries = 0;
  std::string seen;
  for (int ms : {0, 10, 25, 50, 100, 200}) {
    std::this_thread::sleep_until(taken + std::chrono::milliseconds(ms));
    RawClient late(server.port());
    ++tries;
    if (!late.connected() || !late.send("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")) {
      ++refused;
      seen += fmt::format("{} ms: no connection; ", ms);
      continue;
    }
    const RawReply r = late.read_reply(std::chrono::seconds(5));
    seen += fmt::format("{} ms: {}; ", ms, r.status);
    refused += r.status != 200;
  }
  INFO(seen);
  CHECK(refused == tries);
  if (keep_alive.send("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"))
    CHECK(keep_alive.read_reply(std::chrono::seconds(5)).status != 200);
  const RawReply done = first.read_reply(std::chrono::seconds(60));
  CHECK(done.status == 200);
  CHECK(json::parse(done.body)["choices"].size() == 16);
  CHECK(server.wait_exit(std::chrono::seconds(30)) == 143);
}

TEST_CASE("serve hostile: the Bearer scheme is case-insensitive", "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_bearer");
  std::ofstream(dir / "key") << "s3cret-key\n";
  ServeProcess server({"--model", kTinyLm, "--api-key-file", (dir / "key").string()}, dir);
  for (const std::string scheme : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
    auto r = http("GET", server.url("/v1/models"), "", dir,
                  "-H 'Authorization: " + scheme + " s3cret-key'");
    INFO(scheme);
    CHECK(r.status == 200);
  }
  CHECK(http("GET", server.url("/v1/models"), "", dir, "-H 'Authorization: Basic s3cret-key'")
            .status == 401);
  auto r = http("POST", server.url("/v1/completions"),
                R"({"prompt": "x", "max_tokens": 2, "temperature": 0})", dir,
                "-H 'Authorization: bearer s3cret-key'");
  CHECK(r.status == 200);
}

TEST_CASE("serve hostile: a wrong method on a known path is 405 with Allow", "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_405");
  ServeProcess server({"--model", kTinyLm}, dir);
  auto r = http("GET", server.url("/v1/completions"), "", dir);
  CHECK(r.status == 405);
  CHECK_THAT(r.headers, Contains("Allow: POST"));
  CHECK(r.json()["error"]["message"] == "/v1/completions takes POST, not GET");
  r = http("DELETE", server.url("/v1/chat/completions"), "", dir);
  CHECK(r.status == 405);
  r = http("POST", server.url("/health"), "{}", dir);
  CHECK(r.status == 405);
  CHECK_THAT(r.headers, Contains("Allow: GET"));
  CHECK(http("GET", server.url("/v1/nothing"), "", dir).status == 404);
}

TEST_CASE("serve hostile: 100 pipelined requests in one write are answered in order",
          "[serve][hostile]") {
  auto dir = temp_dir("serve_hostile_pipeline");
  ServeProcess server({"--model", kTinyLm}, dir);
  RawClient client(server.port());
  std::string all;
  for (int i = 0; i < 100; ++i) {
    if (i % 10 == 9) {
      const std::string body =
          fmt::format(R"({{"prompt": "The", "max_tokens": 2, "temperature": 0, "seed": {}}})", i);
      all +=
          post_head("/v1/completions", fmt::format("Content-Length: {}\r\n", body.size())) + body;
    } else {
      all += fmt::format("GET /health?i={} HTTP/1.1\r\nHost: x\r\n\r\n", i);
    }
  }
  const auto t = Clock::now();
  REQUIRE(client.send(all));
  for (int i = 0; i < 100; ++i) {
    const RawReply r = client.read_reply(std::chrono::seconds(10));
    INFO("reply " << i);
    REQUIRE(r.status == 200);
    CHECK_THAT(r.body, Contains(i % 10 == 9 ? "text_completion" : "\"ok\""));
  }
  CHECK(seconds_since(t) < 10);
  // The connection stays usable after them.
  REQUIRE(client.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  CHECK(client.read_reply().status == 200);
  CHECK(client.closed_within(2000));
}

TEST_CASE("serve hostile: destein generate names a missing --model path", "[serve][hostile][cli]") {
  const CommandResult r =
      run_command(std::string(DESTEIN_CLI) + " generate --model /nonexistent --prompt hi 2>&1");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("--model /nonexistent: no such file or folder"));
}

// Perspective API scorer against a scripted mock HTTP server on 127.0.0.1: request shape,
// order, retries and backoff, Retry-After, 4xx handling, rate limit, the on-disk cache and
// its crash tolerance, a missing key, an unreachable host. No traffic leaves loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "score/perspective.hpp"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kKeyEnv = "DESTEIN_TEST_PERSPECTIVE_KEY";
constexpr const char* kKey = "test-secret-key-123";

// What the mock answers. Failures are served first (all 429s, then all 503s), then every
// request gets its score, except reject_text which always gets a 400.
struct MockScript {
  int fail_429 = 0;
  int fail_503 = 0;
  std::string retry_after = "0";  // empty: no Retry-After header on the 429s
  std::string reject_text;
};

struct MockRequest {
  std::string request_line;
  nlohmann::json body;
  Clock::time_point arrival;
};

// The oracle score, independent of the scorer: 0.9 for an insult, else 0.1.
double mock_score(const std::string& text) {
  return text.find("idiot") != std::string::npos ? 0.9 : 0.1;
}

// One connection per request (the mock answers "Connection: close"). Serves at most
// max_requests and gives up after 10 s, so a broken scorer cannot hang the suite.
class MockServer {
 public:
  explicit MockServer(MockScript script, int max_requests = 50)
      : script_(std::move(script)), max_requests_(max_requests) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listen_fd_ >= 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  ~MockServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }

  std::string endpoint() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/v1alpha1/comments:analyze";
  }

  std::vector<MockRequest> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    int served = 0;
    while (!stop_ && served < max_requests_ && Clock::now() < deadline) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      timeval tv{2, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      handle(fd);
      ::close(fd);
      ++served;
    }
  }

  void handle(int fd) {
    std::string data;
    char buf[4096];
    size_t header_end = std::string::npos;
    while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return;
      data.append(buf, static_cast<size_t>(n));
    }
    const auto arrival = Clock::now();
    const std::string head = data.substr(0, header_end);
    size_t content_length = 0;
    {
      std::string lower = head;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t at = lower.find("\r\ncontent-length:");
      if (at != std::string::npos) content_length = std::stoul(head.substr(at + 17));
    }
    std::string body = data.substr(header_end + 4);
    while (body.size() < content_length) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return;
      body.append(buf, static_cast<size_t>(n));
    }
    MockRequest request{head.substr(0, head.find("\r\n")),
                        nlohmann::json::parse(body, nullptr, false), arrival};
    std::string text;
    if (request.body.is_object() && request.body.contains("comment"))
      text = request.body["comment"].value("text", "");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(request);
    }

    int status = 200;
    std::string extra, reply;
    if (count_429_ < script_.fail_429) {
      ++count_429_;
      status = 429;
      if (!script_.retry_after.empty()) extra = "Retry-After: " + script_.retry_after + "\r\n";
      reply = R"({"error": {"code": 429, "message": "Quota exceeded"}})";
    } else if (count_503_ < script_.fail_503) {
      ++count_503_;
      status = 503;
      reply = R"({"error": {"code": 503, "message": "The service is currently unavailable."}})";
    } else if (!script_.reject_text.empty() && text == script_.reject_text) {
      status = 400;
      reply =
          R"({"error": {"code": 400, "message": "Attribute TOXICITY does not support request languages: xx"}})";
    } else {
      reply =
          nlohmann::json{
              {"attributeScores",
               {{"TOXICITY",
                 {{"summaryScore", {{"value", mock_score(text)}, {"type", "PROBABILITY"}}}}}}},
              {"languages", {"en"}}}
              .dump();
    }
    const char* reason = status == 200   ? "OK"
                         : status == 429 ? "Too Many Requests"
                         : status == 503 ? "Service Unavailable"
                                         : "Bad Request";
    std::string response = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n" +
                           "Content-Type: application/json\r\nConnection: close\r\n" + extra +
                           "Content-Length: " + std::to_string(reply.size()) + "\r\n\r\n" + reply;
    size_t sent = 0;
    while (sent < response.size()) {
      ssize_t n = ::send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  }

  MockScript script_;
  int max_requests_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<MockRequest> requests_;
  int count_429_ = 0;
  int count_503_ = 0;
};

// Fast options against the mock: no rate limit to speak of, tiny backoffs.
destein::PerspectiveOptions fast_options(const std::string& endpoint) {
  ::setenv(kKeyEnv, kKey, 1);
  // A proxy configured in the environment must not capture loopback traffic.
  ::setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  ::setenv("no_proxy", "127.0.0.1,localhost", 1);
  destein::PerspectiveOptions o;
  o.api_key_env = kKeyEnv;
  o.endpoint = endpoint;
  o.requests_per_second = 1000;
  o.max_retries = 3;
  o.initial_backoff_s = 0.01;
  o.max_backoff_s = 0.05;
  o.timeout_s = 5;
  return o;
}

fs::path tmp_dir() {
  fs::path dir = fs::path(DESTEIN_TEST_BINARY_DIR) / "perspective_tmp";
  fs::create_directories(dir);
  return dir;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

TEST_CASE("Perspective scores come back in input order with the right request", "[perspective]") {
  MockServer server({});
  destein::PerspectiveScorer scorer(fast_options(server.endpoint()));
  CHECK(scorer.name() == "perspective:TOXICITY");
  const std::vector<std::string> texts = {"have a nice day", "you are an idiot", "fine",
                                          "what an idiot move", "caf\xc3\xa9 \"quoted\"\n"};
  auto scores = scorer.score(texts);
  REQUIRE(scores.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i << ": " << texts[i]);
    REQUIRE(scores[i].has_value());
    CHECK(*scores[i] == Approx(mock_score(texts[i])));
  }
  CHECK(scorer.stats().requests == 5);
  CHECK(scorer.stats().retries == 0);
  CHECK(scorer.stats().failures == 0);

  auto requests = server.requests();
  REQUIRE(requests.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto& r = requests[i];
    INFO("request " << i << ": " << r.request_line);
    CHECK(r.request_line.rfind("POST /v1alpha1/comments:analyze?key=test-secret-key-123 HTTP/1.1",
                               0) == 0);
    REQUIRE(r.body.is_object());
    CHECK(r.body["comment"]["text"] == texts[i]);
    CHECK(r.body["languages"] == nlohmann::json::array({"en"}));
    CHECK(r.body["requestedAttributes"] == nlohmann::json{{"TOXICITY", nlohmann::json::object()}});
    CHECK(r.body["doNotStore"] == true);
  }
}

TEST_CASE("Perspective retries a 429 and honours Retry-After", "[perspective]") {
  MockServer server({/*fail_429=*/2});
  auto options = fast_options(server.endpoint());
  // A backoff this long would blow the time bound below: only Retry-After: 0 keeps it fast.
  options.initial_backoff_s = 10;
  options.max_backoff_s = 10;
  destein::PerspectiveScorer scorer(options);
  const auto start = Clock::now();
  auto scores = scorer.score({"you are an idiot"});
  CHECK(seconds_between(start, Clock::now()) < 5);
  REQUIRE(scores[0].has_value());
  CHECK(*scores[0] == Approx(0.9));
  CHECK(scorer.stats().requests == 3);
  CHECK(scorer.stats().retries == 2);
  CHECK(scorer.stats().failures == 0);
}

TEST_CASE("Perspective backs off exponentially on 5xx and gives up with a null score",
          "[perspective]") {
  auto options = fast_options("");
  options.max_retries = 2;
  options.initial_backoff_s = 0.1;
  options.max_backoff_s = 0.15;
  SECTION("recovers before max_retries") {
    MockServer server({0, /*fail_503=*/2});
    options.endpoint = server.endpoint();
    destein::PerspectiveScorer scorer(options);
    auto scores = scorer.score({"hello"});
    REQUIRE(scores[0].has_value());
    CHECK(*scores[0] == Approx(0.1));
    CHECK(scorer.stats().retries == 2);
    // Waits of 0.1 then min(0.2, 0.15) s between the three arrivals.
    auto requests = server.requests();
    REQUIRE(requests.size() == 3);
    CHECK(seconds_between(requests[0].arrival, requests[1].arrival) >= 0.09);
    CHECK(seconds_between(requests[1].arrival, requests[2].arrival) >= 0.14);
  }
  SECTION("max_retries + 1 failures: null, counted, next text unaffected") {
    MockServer server({0, /*fail_503=*/3});
    options.endpoint = server.endpoint();
    destein::PerspectiveScorer scorer(options);
    auto scores = scorer.score({"you are an idiot", "hello"});
    CHECK_FALSE(scores[0].has_value());
    REQUIRE(scores[1].has_value());
    CHECK(*scores[1] == Approx(0.1));
    CHECK(scorer.stats().requests == 4);
    CHECK(scorer.stats().retries == 2);
    CHECK(scorer.stats().failures == 1);
    CHECK_THAT(scorer.last_error(), Contains("HTTP 503") && Contains("3 attempts"));
    CHECK_THAT(scorer.last_error(), !Contains(kKey));
  }
}

TEST_CASE("Perspective does not retry a 400 and returns null for it", "[perspective]") {
  MockServer server({0, 0, "0", /*reject_text=*/"bonjour tout le monde"});
  destein::PerspectiveScorer scorer(fast_options(server.endpoint()));
  auto scores = scorer.score({"idiot", "bonjour tout le monde", "", "ok"});
  REQUIRE(scores.size() == 4);
  CHECK(*scores[0] == Approx(0.9));
  CHECK_FALSE(scores[1].has_value());
  CHECK_FALSE(scores[2].has_value());  // empty text: no request
  CHECK(*scores[3] == Approx(0.1));
  CHECK(scorer.stats().requests == 3);
  CHECK(scorer.stats().retries == 0);
  CHECK(scorer.stats().failures == 2);
  CHECK(server.requests().size() == 3);
}

TEST_CASE("Perspective respects requests_per_second", "[perspective]") {
  MockServer server({});
  auto options = fast_options(server.endpoint());
  options.requests_per_second = 20;
  destein::PerspectiveScorer scorer(options);
  auto scores = scorer.score({"a", "b", "c", "d", "e", "f"});
  for (const auto& s : scores) CHECK(s.has_value());
  auto requests = server.requests();
  REQUIRE(requests.size() == 6);
  // Five gaps of at least 1/20 s (a little slack for clock and socket jitter).
  CHECK(seconds_between(requests.front().arrival, requests.back().arrival) >= 0.23);
}

TEST_CASE("Perspective cache survives the scorer and a killed run", "[perspective]") {
  const fs::path cache = tmp_dir() / "cache.jsonl";
  fs::remove(cache);
  const std::vector<std::string> texts = {"you idiot", "lovely weather", "you idiot"};
  MockServer server({});
  auto options = fast_options(server.endpoint());
  options.cache_path = cache;
  {
    destein::PerspectiveScorer first(options);
    auto scores = first.score(texts);
    CHECK(*scores[0] == Approx(0.9));
    CHECK(*scores[1] == Approx(0.1));
    CHECK(*scores[2] == Approx(0.9));
    CHECK(first.stats().requests == 2);  // the repeated text is a cache hit
    CHECK(first.stats().cache_hits == 1);
  }
  SECTION("a second scorer makes no request") {
    destein::PerspectiveScorer second(options);
    auto scores = second.score(texts);
    CHECK(*scores[0] == Approx(0.9));
    CHECK(*scores[1] == Approx(0.1));
    CHECK(*scores[2] == Approx(0.9));
    CHECK(second.stats().requests == 0);
    CHECK(second.stats().cache_hits == 3);
    CHECK(server.requests().size() == 2);
  }
  SECTION("a partial last line is dropped and the file stays appendable") {
    { std::ofstream(cache, std::ios::app) << R"({"key": "00ab", "sco)"; }
    {
      destein::PerspectiveScorer second(options);
      auto scores = second.score({"you idiot", "new text"});
      CHECK(*scores[0] == Approx(0.9));
      CHECK(*scores[1] == Approx(0.1));
      CHECK(second.stats().cache_hits == 1);
      CHECK(second.stats().requests == 1);
    }
    destein::PerspectiveScorer third(options);
    third.score({"you idiot", "lovely weather", "new text"});
    CHECK(third.stats().cache_hits == 3);
    CHECK(third.stats().requests == 0);
  }
  SECTION("a corrupt line in the middle is an error naming file:line") {
    { std::ofstream(cache, std::ios::app) << "garbage\n{\"key\": \"00ab\", \"score\": 0.5}\n"; }
    CHECK_THROWS_WITH(destein::PerspectiveScorer(options), Contains("cache.jsonl:4"));
  }
}

TEST_CASE("Perspective without a key names the variable to export", "[perspective]") {
  destein::PerspectiveOptions options;
  options.api_key_env = "DESTEIN_TEST_NO_SUCH_PERSPECTIVE_KEY";
  ::unsetenv(options.api_key_env.c_str());
  CHECK_THROWS_AS(destein::PerspectiveScorer(options), std::invalid_argument);
  CHECK_THROWS_WITH(destein::PerspectiveScorer(options),
                    Contains("DESTEIN_TEST_NO_SUCH_PERSPECTIVE_KEY") && Contains("export"));
}

TEST_CASE("Perspective unreachable stops the run instead of writing nulls", "[perspective]") {
  // A port that was free a moment ago and has no listener now.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  const std::string endpoint =
      "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v1alpha1/comments:analyze";

  auto options = fast_options(endpoint);
  options.max_retries = 2;
  destein::PerspectiveScorer scorer(options);
  const auto start = Clock::now();
  try {
    scorer.score({"hello", "world"});
    FAIL("expected std::runtime_error");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK_THAT(message, Contains("Perspective API unreachable at " + endpoint));
    CHECK_THAT(message, Contains("resumed"));
    CHECK_THAT(message, !Contains(kKey));
  }
  CHECK(seconds_between(start, Clock::now()) < 2);
  CHECK(scorer.stats().requests == 3);
  CHECK(scorer.stats().retries == 2);
}

TEST_CASE("Perspective responses: the summary score is read only where the API puts it",
          "[perspective]") {
  using destein::perspective_summary_score;
  // The documented shape of a comments:analyze answer, written by hand.
  const std::string ok =
      R"({"attributeScores":{"TOXICITY":{"spanScores":[{"begin":0,"end":9,"score":{"value":0.8,"type":"PROBABILITY"}}],)"
      R"("summaryScore":{"value":0.91,"type":"PROBABILITY"}}},"languages":["en"],"detectedLanguages":["en"]})";
  CHECK(*perspective_summary_score(ok, "TOXICITY") == Approx(0.91));
  CHECK(!perspective_summary_score(ok, "INSULT"));
  CHECK(!perspective_summary_score("", "TOXICITY"));
  CHECK(!perspective_summary_score("{", "TOXICITY"));
  CHECK(!perspective_summary_score("[1]", "TOXICITY"));
  CHECK(!perspective_summary_score(R"({"attributeScores":5})", "TOXICITY"));
  CHECK(!perspective_summary_score(R"({"attributeScores":{"TOXICITY":[0.5]}})", "TOXICITY"));
  CHECK(!perspective_summary_score(
      R"({"attributeScores":{"TOXICITY":{"summaryScore":{"value":"0.5"}}}})", "TOXICITY"));
  CHECK(!perspective_summary_score(
      R"({"attributeScores":{"TOXICITY":{"summaryScore":{"value":1.5}}}})", "TOXICITY"));
  CHECK(!perspective_summary_score(
      R"({"attributeScores":{"TOXICITY":{"summaryScore":{"value":-0.1}}}})", "TOXICITY"));
  CHECK(*perspective_summary_score(
            R"({"attributeScores":{"TOXICITY":{"summaryScore":{"value":0}}}})", "TOXICITY") == 0.0);
  // An attribute name that is not a valid JSON-pointer token is just a key.
  CHECK(*perspective_summary_score(R"({"attributeScores":{"A~2/B":{"summaryScore":{"value":1}}}})",
                                   "A~2/B") == 1.0);
}

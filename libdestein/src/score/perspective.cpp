#include "score/perspective.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "check.hpp"
#include "fnv1a.hpp"

namespace destein {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kCacheFormat = "destein-perspective-cache";
constexpr int kCacheVersion = 1;

// FNV-1a 64 over attribute, languages and text, separated by NUL so that no two different
// triples hash the same byte string. 64 bits: a collision among a million texts has a
// probability of about 3e-8.
std::string cache_key(const std::string& attribute, const std::vector<std::string>& languages,
                      const std::string& text) {
  uint64_t h = detail::kFnvOffset;
  auto feed = [&h](const std::string& s) {
    h = detail::fnv1a64(s.data(), s.size(), h);
    h *= detail::kFnvPrime;  // the NUL separator: h ^= 0, then the multiply
  };
  feed(attribute);
  for (const auto& language : languages) feed(language);
  feed(text);
  return fmt::format("{:016x}", h);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

size_t write_body(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// Collects Retry-After; curl hands over each header line of each response separately.
size_t read_header(char* data, size_t size, size_t count, void* user) {
  std::string line(data, size * count);
  auto* retry_after = static_cast<std::optional<double>*>(user);
  const std::string name = "retry-after:";
  if (line.size() > name.size()) {
    std::string head = line.substr(0, name.size());
    std::transform(head.begin(), head.end(), head.begin(), ::tolower);
    if (head == name) {
      // Only the delta-seconds form; an HTTP date falls back to the computed backoff.
      char* end = nullptr;
      std::string value = line.substr(name.size());
      double seconds = std::strtod(value.c_str(), &end);
      if (end != value.c_str() && std::isfinite(seconds) && seconds >= 0) *retry_after = seconds;
    }
  }
  return size * count;
}

void global_curl_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    DESTEIN_CHECK_IO(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK,
                     "libcurl initialisation failed (curl_global_init)");
  });
}

struct HttpResult {
  CURLcode curl_code = CURLE_OK;
  std::string curl_error;
  long status = 0;
  std::string body;
  std::optional<double> retry_after;
};

}  // namespace

struct PerspectiveScorer::Impl {
  PerspectiveOptions options;
  std::string key;
  std::string url;
  CURL* curl = nullptr;
  curl_slist* headers = nullptr;
  std::unordered_map<std::string, double> cache;
  std::ofstream cache_out;
  PerspectiveStats stats;
  std::string last_error;
  std::optional<Clock::time_point> last_request;

  ~Impl() {
    if (headers) curl_slist_free_all(headers);
    if (curl) curl_easy_cleanup(curl);
  }

  std::string mask(const std::string& s) const { return replace_all(s, key, "<key>"); }

  void load_cache() {
    const auto& path = options.cache_path;
    uint64_t keep_bytes = 0;  // length of the complete, valid prefix of the file
    bool has_header = false;
    if (std::filesystem::exists(path)) {
      std::ifstream in(path, std::ios::binary);
      DESTEIN_CHECK_IO(in, "cannot read Perspective cache {}", path.string());
      std::stringstream buffer;
      buffer << in.rdbuf();
      const std::string content = buffer.str();
      size_t pos = 0;
      int line_number = 0;
      while (pos < content.size()) {
        ++line_number;
        size_t newline = content.find('\n', pos);
        // A line without its newline is what a killed run leaves behind: dropped, and cut
        // off below so that the next append starts on a fresh line.
        if (newline == std::string::npos) break;
        std::string line = content.substr(pos, newline - pos);
        nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
        DESTEIN_CHECK_IO(!record.is_discarded() && record.is_object(),
                         "{}:{}: corrupt Perspective cache line (expected a JSON object); "
                         "delete the file to start a fresh cache",
                         path.string(), line_number);
        if (line_number == 1) {
          DESTEIN_CHECK_IO(record.value("format", "") == kCacheFormat &&
                               record.value("version", 0) == kCacheVersion,
                           "{}:1: not a Perspective cache: expected header {{\"format\": \"{}\", "
                           "\"version\": {}}}, found {}",
                           path.string(), kCacheFormat, kCacheVersion, line);
          has_header = true;
        } else {
          DESTEIN_CHECK_IO(record.contains("key") && record["key"].is_string() &&
                               record.contains("score") && record["score"].is_number(),
                           "{}:{}: corrupt Perspective cache line: expected {{\"key\": string, "
                           "\"score\": number}}, found {}",
                           path.string(), line_number, line);
          cache[record["key"].get<std::string>()] = record["score"].get<double>();
        }
        pos = newline + 1;
        keep_bytes = pos;
      }
      if (keep_bytes < content.size()) std::filesystem::resize_file(path, keep_bytes);
    } else if (path.has_parent_path()) {
      std::filesystem::create_directories(path.parent_path());
    }
    cache_out.open(path, std::ios::binary | std::ios::app);
    DESTEIN_CHECK_IO(cache_out, "cannot open Perspective cache {} for appending", path.string());
    if (!has_header) {
      cache_out << nlohmann::json{{"format", kCacheFormat},
                                  {"version", kCacheVersion},
                                  {"attribute", options.attribute},
                                  {"languages", options.languages}}
                       .dump()
                << '\n';
      cache_out.flush();
    }
  }

  void remember(const std::string& k, double value) {
    cache[k] = value;
    if (!cache_out.is_open()) return;
    cache_out << nlohmann::json{{"key", k}, {"score", value}}.dump() << '\n';
    cache_out.flush();
    DESTEIN_CHECK_IO(cache_out, "cannot append to Perspective cache {} (disk full?)",
                     options.cache_path.string());
  }

  // Sleeps until the next request is allowed: requests start at least 1/rps apart.
  void wait_for_slot() {
    if (last_request) {
      auto gap = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(1.0 / options.requests_per_second));
      std::this_thread::sleep_until(*last_request + gap);
    }
    last_request = Clock::now();
  }

  HttpResult post(const std::string& body) {
    wait_for_slot();
    ++stats.requests;
    HttpResult result;
    char error_buffer[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &result.retry_after);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
    result.curl_code = curl_easy_perform(curl);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);
    if (result.curl_code != CURLE_OK) {
      result.curl_error = mask(error_buffer[0] ? std::string(error_buffer)
                                               : std::string(curl_easy_strerror(result.curl_code)));
    } else {
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
    }
    return result;
  }

  double backoff(int retry, const std::optional<double>& retry_after) const {
    if (retry_after) return *retry_after;
    return std::min(options.initial_backoff_s * std::pow(2.0, retry), options.max_backoff_s);
  }

  std::optional<double> fail(std::string why) {
    ++stats.failures;
    last_error = mask(std::move(why));
    return std::nullopt;
  }

  std::optional<double> score_one(const std::string& text) {
    nlohmann::json request = {
        {"comment", {{"text", text}}},
        {"languages", options.languages},
        {"requestedAttributes", {{options.attribute, nlohmann::json::object()}}},
        {"doNotStore", true}};
    // Invalid UTF-8 is replaced rather than thrown on: generations cut at a token boundary
    // can end inside a multi-byte character.
    const std::string body = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    for (int attempt = 0;; ++attempt) {
      HttpResult r = post(body);
      std::string why;
      bool connect_error = false;
      if (r.curl_code != CURLE_OK) {
        connect_error = r.curl_code == CURLE_COULDNT_CONNECT ||
                        r.curl_code == CURLE_COULDNT_RESOLVE_HOST ||
                        r.curl_code == CURLE_COULDNT_RESOLVE_PROXY;
        why = r.curl_error;
      } else if (r.status == 200) {
        const std::optional<double> score = perspective_summary_score(r.body, options.attribute);
        if (!score)
          return fail(fmt::format(
              "HTTP 200 without a number in [0, 1] at attributeScores.{}.summaryScore.value: {}",
              options.attribute, r.body.substr(0, 500)));
        return score;
      } else if (r.status == 429 || r.status >= 500) {
        why = fmt::format("HTTP {}: {}", r.status, r.body.substr(0, 500));
      } else {
        // 400 (text in an unsupported language, too long, ...), 403 (bad key): retrying
        // cannot help.
        return fail(fmt::format("HTTP {}: {}", r.status, r.body.substr(0, 500)));
      }
      if (attempt >= options.max_retries) {
        if (connect_error)
          throw std::runtime_error(fmt::format(
              "Perspective API unreachable at {}: {} (after {} attempts); the run can be "
              "resumed: scores obtained so far are cached",
              options.endpoint, why, attempt + 1));
        return fail(fmt::format("{} (gave up after {} attempts)", why, attempt + 1));
      }
      ++stats.retries;
      std::this_thread::sleep_for(std::chrono::duration<double>(backoff(attempt, r.retry_after)));
    }
  }
};

std::optional<double> perspective_summary_score(std::string_view body,
                                                const std::string& attribute) {
  const nlohmann::json response = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  // Walked by hand rather than through a JSON pointer: an attribute name is not a pointer
  // token ('~' and '/' would need escaping), and no level may be assumed an object.
  if (!response.is_object()) return std::nullopt;
  const auto scores = response.find("attributeScores");
  if (scores == response.end() || !scores->is_object()) return std::nullopt;
  const auto attr = scores->find(attribute);
  if (attr == scores->end() || !attr->is_object()) return std::nullopt;
  const auto summary = attr->find("summaryScore");
  if (summary == attr->end() || !summary->is_object()) return std::nullopt;
  const auto value = summary->find("value");
  if (value == summary->end() || !value->is_number()) return std::nullopt;
  const double v = value->get<double>();
  if (!(v >= 0.0 && v <= 1.0)) return std::nullopt;
  return v;
}

PerspectiveScorer::PerspectiveScorer(PerspectiveOptions options) : impl_(std::make_unique<Impl>()) {
  auto& o = options;
  DESTEIN_CHECK_ARG(!o.api_key_env.empty(),
                    "PerspectiveOptions.api_key_env is empty: name the "
                    "environment variable that holds the API key");
  const char* key = std::getenv(o.api_key_env.c_str());
  DESTEIN_CHECK_ARG(key && *key,
                    "Perspective API key not found: environment variable {} is unset or empty; "
                    "export {}=<your API key> (from the Google Cloud project with the Comment "
                    "Analyzer API enabled)",
                    o.api_key_env, o.api_key_env);
  DESTEIN_CHECK_ARG(o.requests_per_second > 0 && std::isfinite(o.requests_per_second),
                    "PerspectiveOptions.requests_per_second must be > 0, found {}",
                    o.requests_per_second);
  DESTEIN_CHECK_ARG(o.max_retries >= 0, "PerspectiveOptions.max_retries must be >= 0, found {}",
                    o.max_retries);
  DESTEIN_CHECK_ARG(o.initial_backoff_s >= 0 && o.max_backoff_s >= 0,
                    "PerspectiveOptions backoffs must be >= 0, found initial_backoff_s {} and "
                    "max_backoff_s {}",
                    o.initial_backoff_s, o.max_backoff_s);
  DESTEIN_CHECK_ARG(o.timeout_s > 0, "PerspectiveOptions.timeout_s must be > 0, found {}",
                    o.timeout_s);
  DESTEIN_CHECK_ARG(!o.attribute.empty(), "PerspectiveOptions.attribute is empty (e.g. TOXICITY)");
  DESTEIN_CHECK_ARG(!o.languages.empty(), "PerspectiveOptions.languages is empty (e.g. [\"en\"])");
  DESTEIN_CHECK_ARG(o.endpoint.rfind("http://", 0) == 0 || o.endpoint.rfind("https://", 0) == 0,
                    "PerspectiveOptions.endpoint must be an http(s) URL, found '{}'", o.endpoint);

  Impl& im = *impl_;
  im.options = std::move(options);
  im.key = key;
  global_curl_init();
  im.curl = curl_easy_init();
  DESTEIN_CHECK_IO(im.curl, "libcurl could not create a handle (curl_easy_init)");
  char* escaped = curl_easy_escape(im.curl, im.key.c_str(), static_cast<int>(im.key.size()));
  DESTEIN_CHECK_IO(escaped, "libcurl could not escape the API key");
  const char separator = im.options.endpoint.find('?') == std::string::npos ? '?' : '&';
  im.url = fmt::format("{}{}key={}", im.options.endpoint, separator, escaped);
  curl_free(escaped);
  im.headers = curl_slist_append(nullptr, "Content-Type: application/json");
  // One handle for all requests: curl keeps the connection (and TLS session) alive.
  curl_easy_setopt(im.curl, CURLOPT_URL, im.url.c_str());
  curl_easy_setopt(im.curl, CURLOPT_HTTPHEADER, im.headers);
  curl_easy_setopt(im.curl, CURLOPT_POST, 1L);
  curl_easy_setopt(im.curl, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(im.curl, CURLOPT_HEADERFUNCTION, read_header);
  curl_easy_setopt(im.curl, CURLOPT_TIMEOUT_MS, static_cast<long>(im.options.timeout_s * 1000));
  // Signals are not thread-safe; without them a timeout cannot interrupt DNS resolution,
  // which libcurl's threaded resolver handles anyway.
  curl_easy_setopt(im.curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(im.curl, CURLOPT_USERAGENT, "destein-perspective/1");
  if (!im.options.cache_path.empty()) im.load_cache();
}

PerspectiveScorer::~PerspectiveScorer() = default;

std::vector<std::optional<double>> PerspectiveScorer::score(const std::vector<std::string>& texts) {
  Impl& im = *impl_;
  std::vector<std::optional<double>> scores;
  scores.reserve(texts.size());
  for (const auto& text : texts) {
    if (text.empty()) {
      scores.push_back(im.fail("empty text: Perspective rejects it, no request made"));
      continue;
    }
    const std::string k = cache_key(im.options.attribute, im.options.languages, text);
    if (auto it = im.cache.find(k); it != im.cache.end()) {
      ++im.stats.cache_hits;
      scores.push_back(it->second);
      continue;
    }
    std::optional<double> s = im.score_one(text);
    if (s) im.remember(k, *s);
    scores.push_back(s);
  }
  return scores;
}

std::string PerspectiveScorer::name() const { return "perspective:" + impl_->options.attribute; }
const PerspectiveStats& PerspectiveScorer::stats() const { return impl_->stats; }
const PerspectiveOptions& PerspectiveScorer::options() const { return impl_->options; }
const std::string& PerspectiveScorer::last_error() const { return impl_->last_error; }

}  // namespace destein

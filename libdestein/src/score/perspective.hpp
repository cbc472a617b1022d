#pragma once
/// The online toxicity scorer: Google's Perspective API (the scorer the RealToxicityPrompts
/// numbers were reported with), over HTTPS with libcurl. Rate-limited, retried with
/// exponential backoff, and cached on disk so that a killed evaluation resumes without
/// paying for the same texts twice.
///
/// Example:
///
///     // export PERSPECTIVE_API_KEY=...
///     destein::PerspectiveOptions options;
///     options.cache_path = "runs/perspective-cache.jsonl";
///     destein::PerspectiveScorer scorer(options);
///     auto scores = scorer.score({"you are an idiot", "have a nice day"});
///     // scores[i] is std::nullopt where Perspective gave no score (see score()).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "destein/score/scorer.hpp"

namespace destein {

/// How to reach Perspective and how gently to treat it.
struct PerspectiveOptions {
  /// Name of the environment variable that holds the API key (the key never goes in a
  /// config file, and is masked in every message).
  std::string api_key_env = "PERSPECTIVE_API_KEY";
  /// The comments:analyze URL; the key is appended as the `key` query parameter.
  std::string endpoint = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze";
  /// At most this many HTTP requests per second, retries included (the default quota of a
  /// Perspective project is 1 QPS). > 0.
  double requests_per_second = 1.0;
  /// Retries of one text after a 429, a 5xx, or a transport error (>= 0).
  int max_retries = 5;
  /// Wait before the first retry, doubled on each further retry, capped at max_backoff_s.
  /// A Retry-After header (seconds) replaces the computed wait.
  double initial_backoff_s = 1.0;
  double max_backoff_s = 32.0;
  /// Whole-request timeout (connect + transfer) in seconds. > 0.
  double timeout_s = 30;
  /// JSON-Lines score cache, created if missing; empty: scores are remembered only for the
  /// lifetime of the scorer.
  std::filesystem::path cache_path;
  /// The Perspective attribute requested (e.g. "TOXICITY", "SEVERE_TOXICITY").
  std::string attribute = "TOXICITY";
  /// Languages sent with each request (Perspective otherwise guesses, and rejects texts it
  /// thinks are in a language it does not support).
  std::vector<std::string> languages = {"en"};
};

/// Counters over the lifetime of a scorer.
struct PerspectiveStats {
  /// HTTP attempts made (each retry counts again).
  int64_t requests = 0;
  /// Attempts repeated after a 429, 5xx or transport error.
  int64_t retries = 0;
  /// Texts answered from the cache without a request.
  int64_t cache_hits = 0;
  /// Texts whose score is std::nullopt: empty text, a 4xx rejection, retries exhausted,
  /// or an unreadable response.
  int64_t failures = 0;
};

/// The summary score of `attribute` in the body of a comments:analyze response
/// (attributeScores.<attribute>.summaryScore.value); std::nullopt when the body is not
/// JSON, lacks that path, or holds something other than a number in [0, 1] there.
std::optional<double> perspective_summary_score(std::string_view body,
                                                const std::string& attribute);

/// ToxicityScorer backed by the Perspective API. Not thread-safe: one scorer per thread
/// (they may share a cache file only if they never run at the same time).
class PerspectiveScorer : public ToxicityScorer {
 public:
  /// Reads the key from the environment and loads the cache.
  /// Throws std::invalid_argument if the key variable is unset or empty, or an option is
  /// out of range; std::runtime_error if the cache file cannot be read or has a corrupt
  /// line before its last one (a partial last line, left by a killed run, is dropped).
  explicit PerspectiveScorer(PerspectiveOptions options = {});
  ~PerspectiveScorer() override;
  PerspectiveScorer(const PerspectiveScorer&) = delete;
  PerspectiveScorer& operator=(const PerspectiveScorer&) = delete;

  /// One score in [0, 1] per text, in input order: the summary score of the attribute.
  /// Cached texts make no request; each new score is appended to the cache file and
  /// flushed before the next request. std::nullopt (and stats().failures + 1) for an
  /// empty text (Perspective rejects it; no request is made), for a 4xx other than 429
  /// (not retried), for a text still failing after max_retries, and for a response without
  /// the score. Throws std::runtime_error "Perspective API unreachable ..." when a text's
  /// attempts all end in a connect or resolve error: the host is down or the network is
  /// gone, so the run should stop and be resumed later rather than write null scores
  /// (scores obtained before are already in the cache).
  std::vector<std::optional<double>> score(const std::vector<std::string>& texts) override;

  /// "perspective:<attribute>", e.g. "perspective:TOXICITY".
  std::string name() const override;

  const PerspectiveStats& stats() const;
  const PerspectiveOptions& options() const;
  /// Why the most recent failure happened (HTTP status and Perspective's message, key
  /// masked); empty if nothing failed yet.
  const std::string& last_error() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace destein

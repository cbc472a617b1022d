#pragma once
/// Counters, gauges and histograms in Prometheus's text format (version 0.0.4), for the
/// `GET /metrics` page of `destein serve`. Thread-safe. LibTorch-free.
///
///   destein::MetricsRegistry m;
///   m.describe_counter("destein_requests_total", "HTTP requests by endpoint and status");
///   m.add("destein_requests_total", {{"endpoint", "/v1/completions"}, {"status", "200"}});
///   m.describe_histogram("destein_request_seconds", "request latency", {0.1, 1, 10});
///   m.observe("destein_request_seconds", 0.42);
///   std::string page = m.render();

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace destein {

class MetricsRegistry {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  void describe_counter(const std::string& name, const std::string& help);
  void describe_gauge(const std::string& name, const std::string& help);
  /// `bounds`: the upper bounds of the buckets, increasing (+Inf is added).
  void describe_histogram(const std::string& name, const std::string& help,
                          std::vector<double> bounds);

  /// Adds to a counter (or sets nothing when `amount` is 0: the series still appears).
  /// Throws std::invalid_argument for a name not described as a counter.
  void add(const std::string& name, const Labels& labels = {}, double amount = 1);
  /// Sets a gauge, or a counter kept elsewhere (its running total). Throws
  /// std::invalid_argument for a name not described as a gauge or counter.
  void set(const std::string& name, double value, const Labels& labels = {});
  /// Replaces a histogram's state with counts kept elsewhere: `bucket_counts` per bucket
  /// (not cumulative, one more than the bounds: the last is +Inf), their sum and count.
  void set_histogram(const std::string& name, const std::vector<double>& bucket_counts, double sum);
  /// Records one observation. Throws std::invalid_argument for a name not described as a histogram.
  void observe(const std::string& name, double value);

  /// The exposition text: # HELP, # TYPE, then the samples, metrics in description order.
  std::string render() const;

 private:
  struct Metric {
    std::string name, help, type;
    std::map<std::string, double> series;  // rendered label set -> value
    std::vector<double> bounds;            // histogram
    std::vector<double> bucket_counts;     // histogram, not cumulative
    double sum = 0, count = 0;
  };
  Metric& find(const std::string& name, const char* type);
  mutable std::mutex mutex_;
  std::vector<Metric> metrics_;
};

}  // namespace destein

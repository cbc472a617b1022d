#include "serve/metrics_registry.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace destein {
namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string render_labels(const MetricsRegistry::Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    out +=
        fmt::format("{}{}=\"{}\"", i ? "," : "", labels[i].first, escape_label(labels[i].second));
  }
  return out + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

}  // namespace

void MetricsRegistry::describe_counter(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mutex_);
  metrics_.push_back({name, help, "counter", {}, {}, {}, 0, 0});
}

void MetricsRegistry::describe_gauge(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mutex_);
  metrics_.push_back({name, help, "gauge", {}, {}, {}, 0, 0});
}

void MetricsRegistry::describe_histogram(const std::string& name, const std::string& help,
                                         std::vector<double> bounds) {
  if (!std::is_sorted(bounds.begin(), bounds.end()) || bounds.empty()) {
    throw std::invalid_argument(
        fmt::format("histogram {}: bucket bounds must be non-empty and increasing", name));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  Metric m{name, help, "histogram", {}, std::move(bounds), {}, 0, 0};
  m.bucket_counts.assign(m.bounds.size() + 1, 0);
  metrics_.push_back(std::move(m));
}

MetricsRegistry::Metric& MetricsRegistry::find(const std::string& name, const char* type) {
  for (auto& m : metrics_) {
    if (m.name == name) {
      if (m.type != type)
        throw std::invalid_argument(fmt::format("metric {} is a {}, not a {}", name, m.type, type));
      return m;
    }
  }
  throw std::invalid_argument(fmt::format("metric {} was not described", name));
}

void MetricsRegistry::add(const std::string& name, const Labels& labels, double amount) {
  std::lock_guard<std::mutex> lock(mutex_);
  find(name, "counter").series[render_labels(labels)] += amount;
}

void MetricsRegistry::set(const std::string& name, double value, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& m : metrics_) {
    if (m.name == name && m.type == "counter") {
      m.series[render_labels(labels)] = value;
      return;
    }
  }
  find(name, "gauge").series[render_labels(labels)] = value;
}

void MetricsRegistry::set_histogram(const std::string& name,
                                    const std::vector<double>& bucket_counts, double sum) {
  std::lock_guard<std::mutex> lock(mutex_);
  Metric& m = find(name, "histogram");
  if (bucket_counts.size() != m.bucket_counts.size()) {
    throw std::invalid_argument(fmt::format("histogram {}: {} bucket counts given, {} expected",
                                            name, bucket_counts.size(), m.bucket_counts.size()));
  }
  m.bucket_counts = bucket_counts;
  m.sum = sum;
  m.count = 0;
  for (double c : bucket_counts) m.count += c;
}

void MetricsRegistry::observe(const std::string& name, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  Metric& m = find(name, "histogram");
  const size_t b = static_cast<size_t>(std::lower_bound(m.bounds.begin(), m.bounds.end(), value) -
                                       m.bounds.begin());
  m.bucket_counts[b] += 1;
  m.sum += value;
  m.count += 1;
}

std::string MetricsRegistry::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (const auto& m : metrics_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, m.help, m.name, m.type);
    if (m.type == "histogram") {
      double cumulative = 0;
      for (size_t i = 0; i <= m.bounds.size(); ++i) {
        cumulative += m.bucket_counts[i];
        const std::string le = i < m.bounds.size() ? number(m.bounds[i]) : "+Inf";
        out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", m.name, le, number(cumulative));
      }
      out +=
          fmt::format("{}_sum {}\n{}_count {}\n", m.name, number(m.sum), m.name, number(m.count));
    } else {
      if (m.series.empty()) out += fmt::format("{} 0\n", m.name);
      for (const auto& [labels, value] : m.series)
        out += fmt::format("{}{} {}\n", m.name, labels, number(value));
    }
  }
  return out;
}

}  // namespace destein

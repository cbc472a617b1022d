#include "args.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace destein::app {

Args::Args(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string word = argv[i];
    if (word == "--help" || word == "-h") {
      help_ = true;
      continue;
    }
    if (word.rfind("--", 0) != 0 || word.size() == 2) {
      positional_.push_back(word);
      continue;
    }
    std::string key = word.substr(2);
    auto eq = key.find('=');
    if (eq != std::string::npos) {
      values_[key.substr(0, eq)] = key.substr(eq + 1);
      all_values_[key.substr(0, eq)].push_back(key.substr(eq + 1));
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      values_[key] = argv[++i];
      all_values_[key].push_back(values_[key]);
    } else {
      flags_seen_.insert(key);
    }
  }
}

void Args::document(const std::string& key, std::string value, const char* help) {
  for (const auto& d : docs_) {
    if (d.key == key) return;
  }
  docs_.push_back({key, std::move(value), help ? help : ""});
}

std::optional<std::string> Args::lookup(const std::string& key) {
  used_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) {
    if (flags_seen_.count(key)) {
      throw std::invalid_argument(fmt::format("option --{} needs a value", key));
    }
    return std::nullopt;
  }
  return it->second;
}

std::optional<std::string> Args::get(const std::string& key, const char* help) {
  document(key, "VALUE", help);
  return lookup(key);
}

std::string Args::get_or(const std::string& key, const std::string& fallback, const char* help) {
  document(key, fmt::format("VALUE (default {})", fallback.empty() ? "none" : fallback), help);
  auto v = lookup(key);
  return v ? *v : fallback;
}

std::string Args::require(const std::string& key, const char* help) {
  document(key, "VALUE (required)", help);
  auto v = lookup(key);
  if (!v && help_) return {};
  if (!v) throw std::invalid_argument(fmt::format("missing required option --{}", key));
  return *v;
}

int64_t Args::get_int(const std::string& key, int64_t fallback, const char* help) {
  document(key, fmt::format("N (default {})", fallback), help);
  auto v = lookup(key);
  if (!v) return fallback;
  try {
    size_t used = 0;
    int64_t out = std::stoll(*v, &used);
    if (used == v->size()) return out;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(fmt::format("option --{}: expected an integer, found '{}'", key, *v));
}

double Args::get_double(const std::string& key, double fallback, const char* help) {
  document(key, fmt::format("X (default {})", fallback), help);
  auto v = lookup(key);
  if (!v) return fallback;
  try {
    size_t used = 0;
    double out = std::stod(*v, &used);
    if (used == v->size()) return out;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(fmt::format("option --{}: expected a number, found '{}'", key, *v));
}

bool Args::flag(const std::string& key, const char* help) {
  document(key, "", help);
  used_.insert(key);
  if (flags_seen_.count(key)) return true;
  auto it = values_.find(key);
  if (it == values_.end()) return false;
  if (it->second == "true" || it->second == "1") return true;
  if (it->second == "false" || it->second == "0") return false;
  throw std::invalid_argument(
      fmt::format("option --{} is a flag: give it alone or as --{}=true|false", key, key));
}

namespace {

std::vector<int64_t> parse_int_list(const std::string& key, const std::string* v) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= v->size()) {
    size_t end = v->find(',', start);
    if (end == std::string::npos) end = v->size();
    std::string item = v->substr(start, end - start);
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw std::invalid_argument(fmt::format(
          "option --{}: expected comma-separated integers, found '{}' in '{}'", key, item, *v));
    }
    start = end + 1;
  }
  return out;
}

}  // namespace

std::vector<int64_t> Args::get_int_list(const std::string& key, const char* help) {
  document(key, "N,N,...", help);
  auto v = lookup(key);
  if (!v) return {};
  return parse_int_list(key, &*v);
}

std::vector<std::vector<int64_t>> Args::get_int_lists(const std::string& key, const char* help) {
  document(key, "N,N,... (repeatable)", help);
  std::vector<std::vector<int64_t>> out;
  if (!lookup(key)) return out;
  for (const auto& v : all_values_.at(key)) out.push_back(parse_int_list(key, &v));
  return out;
}

void Args::finish() const {
  if (help_) {
    std::string text = "options:\n";
    for (const auto& d : docs_) {
      std::string left = "  --" + d.key + (d.value.empty() ? "" : " " + d.value);
      text += left;
      if (!d.help.empty())
        text +=
            (left.size() < 40 ? std::string(40 - left.size(), ' ') : "\n" + std::string(40, ' ')) +
            d.help;
      text += "\n";
    }
    throw HelpRequested(text);
  }
  for (const auto& [key, value] : values_) {
    if (!used_.count(key)) throw std::invalid_argument(fmt::format("unknown option --{}", key));
  }
  for (const auto& key : flags_seen_) {
    if (!used_.count(key)) throw std::invalid_argument(fmt::format("unknown option --{}", key));
  }
}

int default_thread_count() {
  if (const char* env = std::getenv("DESTEIN_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

}  // namespace destein::app

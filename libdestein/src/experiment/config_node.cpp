#include "experiment/config_node.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace destein {

namespace {
template <typename T>
const char* type_word() {
  if constexpr (std::is_same_v<T, bool>)
    return "true or false";
  else if constexpr (std::is_integral_v<T>)
    return "an integer";
  else if constexpr (std::is_floating_point_v<T>)
    return "a number";
  else if constexpr (std::is_same_v<T, std::string>)
    return "a string";
  else
    return "a list";
}
}  // namespace

ConfigNode::ConfigNode(std::shared_ptr<State> state, YAML::Node node, std::string path)
    : state_(std::move(state)), node_(std::move(node)), path_(std::move(path)) {}

ConfigNode ConfigNode::load_string(const std::string& text, const std::string& source) {
  auto state = std::make_shared<State>();
  state->source = source;
  try {
    state->root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw std::invalid_argument(fmt::format("{}:{}:{}: YAML syntax error: {}", source,
                                            e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (state->root.IsNull()) state->root = YAML::Node(YAML::NodeType::Map);
  if (!state->root.IsMap()) {
    throw std::invalid_argument(
        fmt::format("{}: expected a YAML mapping of option: value at the top", source));
  }
  return ConfigNode(state, state->root, "");
}

ConfigNode ConfigNode::load_file(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    throw std::runtime_error(fmt::format("{}: no such config file", path.string()));
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return load_string(ss.str(), path.string());
}

std::string ConfigNode::where(const std::string& key) const {
  YAML::Node n = key.empty() ? node_ : lookup(key);
  if (n && n.Mark().line >= 0) return fmt::format("{}:{}", state_->source, n.Mark().line + 1);
  if (node_ && node_.Mark().line >= 0)
    return fmt::format("{}:{}", state_->source, node_.Mark().line + 1);
  return state_->source;
}

YAML::Node ConfigNode::lookup(const std::string& key) const {
  if (!node_ || !node_.IsMap()) return YAML::Node();
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (it->first.as<std::string>() == key) return it->second;
  }
  return YAML::Node();
}

bool ConfigNode::has(const std::string& key) const {
  state_->read.insert(path_of(key));
  YAML::Node n = lookup(key);
  return n && !n.IsNull();
}

template <typename T>
T ConfigNode::get(const std::string& key, const T& fallback) const {
  state_->read.insert(path_of(key));
  YAML::Node n = lookup(key);
  if (!n || n.IsNull()) return fallback;
  try {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!n.IsScalar()) throw YAML::Exception(n.Mark(), "not a scalar");
    }
    return n.as<T>();
  } catch (const YAML::Exception&) {
    std::string found =
        n.IsScalar() ? "'" + n.Scalar() + "'" : (n.IsMap() ? "a mapping" : "a list");
    throw std::invalid_argument(fmt::format("{}: key {}: expected {}, found {}", where(key),
                                            path_of(key), type_word<T>(), found));
  }
}

template <typename T>
T ConfigNode::require(const std::string& key) const {
  YAML::Node n = lookup(key);
  if (!n || n.IsNull()) {
    throw std::invalid_argument(fmt::format("{}: missing required key {}", where(), path_of(key)));
  }
  return get<T>(key, T{});
}

ConfigNode ConfigNode::child(const std::string& key) const {
  state_->read.insert(path_of(key));
  YAML::Node n = lookup(key);
  if (n && !n.IsNull() && !n.IsMap()) {
    throw std::invalid_argument(
        fmt::format("{}: key {}: expected a mapping", where(key), path_of(key)));
  }
  return ConfigNode(state_, n ? n : YAML::Node(), path_of(key));
}

std::vector<ConfigNode> ConfigNode::list(const std::string& key) const {
  state_->read.insert(path_of(key));
  YAML::Node n = lookup(key);
  std::vector<ConfigNode> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) {
    throw std::invalid_argument(
        fmt::format("{}: key {}: expected a list", where(key), path_of(key)));
  }
  for (size_t i = 0; i < n.size(); ++i) {
    out.push_back(ConfigNode(state_, n[i], fmt::format("{}[{}]", path_of(key), i)));
  }
  return out;
}

void ConfigNode::check_unknown(const YAML::Node& node, const std::string& path) const {
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.as<std::string>();
      const std::string full = path.empty() ? key : path + "." + key;
      if (!state_->read.count(full)) {
        throw std::invalid_argument(
            fmt::format("{}:{}: unknown key {}", state_->source, it->first.Mark().line + 1, full));
      }
      check_unknown(it->second, full);
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) check_unknown(node[i], fmt::format("{}[{}]", path, i));
  }
}

void ConfigNode::finish() const { check_unknown(state_->root, ""); }

template bool ConfigNode::get<bool>(const std::string&, const bool&) const;
template int ConfigNode::get<int>(const std::string&, const int&) const;
template int64_t ConfigNode::get<int64_t>(const std::string&, const int64_t&) const;
template uint64_t ConfigNode::get<uint64_t>(const std::string&, const uint64_t&) const;
template double ConfigNode::get<double>(const std::string&, const double&) const;
template std::string ConfigNode::get<std::string>(const std::string&, const std::string&) const;
template std::vector<std::string> ConfigNode::get<std::vector<std::string>>(
    const std::string&, const std::vector<std::string>&) const;
template std::vector<double> ConfigNode::get<std::vector<double>>(const std::string&,
                                                                  const std::vector<double>&) const;
template std::vector<int64_t> ConfigNode::get<std::vector<int64_t>>(
    const std::string&, const std::vector<int64_t>&) const;
template bool ConfigNode::require<bool>(const std::string&) const;
template int ConfigNode::require<int>(const std::string&) const;
template int64_t ConfigNode::require<int64_t>(const std::string&) const;
template uint64_t ConfigNode::require<uint64_t>(const std::string&) const;
template double ConfigNode::require<double>(const std::string&) const;
template std::string ConfigNode::require<std::string>(const std::string&) const;
template std::vector<std::string> ConfigNode::require<std::vector<std::string>>(
    const std::string&) const;
template std::vector<double> ConfigNode::require<std::vector<double>>(const std::string&) const;
template std::vector<int64_t> ConfigNode::require<std::vector<int64_t>>(const std::string&) const;

}  // namespace destein

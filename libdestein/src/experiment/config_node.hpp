#pragma once
/// A parsed YAML experiment file that remembers which keys were read. Every read records
/// its key path; finish() then reports any key nobody read, with file and line, so a
/// misspelt option is an error instead of a silently ignored default. Type errors name
/// the key path, the line and what was expected. Schema (schema.hpp) maps a ConfigNode
/// onto an options struct.

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace destein {

/// A mapping (or the document) inside a parsed YAML file; cheap to copy.
class ConfigNode {
 public:
  /// Parses a YAML file; a syntax error names file:line:column.
  static ConfigNode load_file(const std::filesystem::path& path);
  /// Parses YAML text (`source` names it in errors).
  static ConfigNode load_string(const std::string& text, const std::string& source);

  bool has(const std::string& key) const;
  /// The value at `key`, or `fallback` when absent. Throws std::invalid_argument on a
  /// type mismatch ("file:line: key model.threads: expected an integer, found 'two'").
  template <typename T>
  T get(const std::string& key, const T& fallback) const;
  template <typename T>
  T require(const std::string& key) const;
  /// A nested mapping (absent: an empty node that answers every get with its fallback).
  ConfigNode child(const std::string& key) const;
  /// The items of a sequence (absent: empty).
  std::vector<ConfigNode> list(const std::string& key) const;

  /// Throws std::invalid_argument naming the first key (path and line) that was never read.
  void finish() const;

  const std::string& source() const { return state_->source; }
  std::string path_of(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  /// "file:line" of `key`, or of this node when key is empty.
  std::string where(const std::string& key = "") const;

 private:
  struct State {
    std::string source;
    YAML::Node root;
    std::set<std::string> read;
  };
  ConfigNode(std::shared_ptr<State> state, YAML::Node node, std::string path);
  YAML::Node lookup(const std::string& key) const;
  void check_unknown(const YAML::Node& node, const std::string& path) const;

  std::shared_ptr<State> state_;
  YAML::Node node_;
  std::string path_;
};

}  // namespace destein

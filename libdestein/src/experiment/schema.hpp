#pragma once
/// A YAML mapping of option keys onto a plain options struct, described once as a table
/// and used both to read a file (unknown keys and wrong types are errors naming file:line
/// and the key path) and to write the fully resolved options back (`--dump-config`).
///
///     destein::Schema<Options> s;
///     s.field("model", &Options::model).required()
///      .field("samples", [](Options& o) -> int64_t& { return o.generation.num_samples; })
///      .section("probes", &Options::probe, probe_schema())
///      .check([](const Options& o, const destein::ConfigNode& n) { ... });
///     Options o = s.load(destein::ConfigNode::load_file("x.yaml"));

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "experiment/config_node.hpp"

namespace destein {

namespace detail {
inline void emit_yaml_value(YAML::Emitter& e, const std::string& s) {
  // Quote what a plain scalar would lose: surrounding spaces, newlines, emptiness.
  const bool quote = s.empty() || std::isspace(static_cast<unsigned char>(s.front())) ||
                     std::isspace(static_cast<unsigned char>(s.back())) ||
                     s.find('\n') != std::string::npos;
  if (quote) e << YAML::DoubleQuoted;
  e << s;
}
template <typename V>
void emit_yaml_value(YAML::Emitter& e, const V& v) {
  if constexpr (std::is_same_v<V, std::vector<std::string>> ||
                std::is_same_v<V, std::vector<double>> || std::is_same_v<V, std::vector<int64_t>>) {
    e << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : v) emit_yaml_value(e, x);
    e << YAML::EndSeq;
  } else {
    e << v;
  }
}
}  // namespace detail

template <typename T>
class Schema {
 public:
  /// A key bound to `member` of T.
  template <typename M>
  Schema& field(std::string key, M T::*member) {
    return field(std::move(key), [member](T& t) -> M& { return t.*member; });
  }

  /// A key bound to whatever `access(T&)` returns a reference to (a nested member).
  template <typename Access, typename = std::enable_if_t<!std::is_member_object_pointer_v<Access>>>
  Schema& field(std::string key, Access access) {
    using M = std::remove_reference_t<std::invoke_result_t<Access, T&>>;
    Entry entry;
    entry.key = key;
    entry.read = [key, access](const ConfigNode& node, T& t, bool required) {
      M& m = access(t);
      m = required ? node.template require<M>(key) : node.template get<M>(key, m);
    };
    entry.emit = [key, access](YAML::Emitter& e, const T& t) {
      e << YAML::Key << key << YAML::Value;
      detail::emit_yaml_value(e, access(const_cast<T&>(t)));
    };
    entries_.push_back(std::move(entry));
    return *this;
  }

  /// A key whose YAML value is a string turned into M by `parse` (which throws
  /// std::invalid_argument saying what is expected) and written back by `format`: enums.
  template <typename Access, typename Parse, typename Format>
  Schema& field_as(std::string key, Access access, Parse parse, Format format) {
    Entry entry;
    entry.key = key;
    entry.read = [key, access, parse, format](const ConfigNode& node, T& t, bool required) {
      auto& m = access(t);
      const std::string text = required ? node.template require<std::string>(key)
                                        : node.template get<std::string>(key, format(m));
      try {
        m = parse(text);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(node.where(key) + ": key " + node.path_of(key) + ": " +
                                    e.what());
      }
    };
    entry.emit = [key, access, format](YAML::Emitter& e, const T& t) {
      e << YAML::Key << key << YAML::Value;
      detail::emit_yaml_value(e, std::string(format(access(const_cast<T&>(t)))));
    };
    entries_.push_back(std::move(entry));
    return *this;
  }

  /// What no table says: `read` takes this level's node, `emit` writes keys into the
  /// open map. For shapes such as "these keys here, or a list of them under another key".
  Schema& custom(std::function<void(const ConfigNode&, T&)> read,
                 std::function<void(YAML::Emitter&, const T&)> emit) {
    Entry entry;
    entry.read = [read](const ConfigNode& node, T& t, bool) { read(node, t); };
    entry.emit = std::move(emit);
    entries_.push_back(std::move(entry));
    return *this;
  }

  /// Marks the last key added as required (absent: "missing required key").
  Schema& required() {
    entries_.back().required = true;
    return *this;
  }

  /// A nested mapping `key:` read by `sub` into the S that `access(T&)` returns.
  template <typename S, typename Access>
  Schema& section(std::string key, Access access, Schema<S> sub) {
    Entry entry;
    entry.key = key;
    entry.read = [key, access, sub](const ConfigNode& node, T& t, bool) {
      sub.read(node.child(key), access(t));
    };
    entry.emit = [key, access, sub](YAML::Emitter& e, const T& t) {
      e << YAML::Key << key << YAML::Value << YAML::BeginMap;
      sub.emit(e, access(const_cast<T&>(t)));
      e << YAML::EndMap;
    };
    entries_.push_back(std::move(entry));
    return *this;
  }
  template <typename S>
  Schema& section(std::string key, S T::*member, Schema<S> sub) {
    return section(
        std::move(key), [member](T& t) -> S& { return t.*member; }, std::move(sub));
  }

  /// The keys of `sub` at this level, read into the S that `access(T&)` returns (shared key
  /// groups such as the model keys every experiment has at its top).
  template <typename S, typename Access>
  Schema& include(Access access, Schema<S> sub) {
    Entry entry;
    entry.read = [access, sub](const ConfigNode& node, T& t, bool) { sub.read(node, access(t)); };
    entry.emit = [access, sub](YAML::Emitter& e, const T& t) {
      sub.emit(e, access(const_cast<T&>(t)));
    };
    entries_.push_back(std::move(entry));
    return *this;
  }
  template <typename S>
  Schema& include(S T::*member, Schema<S> sub) {
    return include([member](T& t) -> S& { return t.*member; }, std::move(sub));
  }

  /// A list of mappings `key: [{...}, ...]`, each read by `item` starting from `prototype`;
  /// not written when empty.
  template <typename S>
  Schema& list(std::string key, std::vector<S> T::*member, Schema<S> item, S prototype = S{}) {
    Entry entry;
    entry.key = key;
    entry.read = [key, member, item, prototype](const ConfigNode& node, T& t, bool required) {
      const auto nodes = node.list(key);
      if (required && nodes.empty()) {
        throw std::invalid_argument(node.where() + ": missing required key " + node.path_of(key) +
                                    " (a list)");
      }
      if (!node.has(key)) return;  // absent: keep the default list
      auto& out = t.*member;
      out.clear();
      for (const auto& n : nodes) {
        S s = prototype;
        item.read(n, s);
        out.push_back(std::move(s));
      }
    };
    entry.emit = [key, member, item](YAML::Emitter& e, const T& t) {
      // An empty list is left out, so that a key added later keeps older dumps (the
      // config.resolved.yaml of runs) as they were; every list here defaults to empty or
      // refuses to be empty, so reading the dump back gives the same value.
      if ((t.*member).empty()) return;
      e << YAML::Key << key << YAML::Value << YAML::BeginSeq;
      for (const auto& s : t.*member) {
        e << YAML::BeginMap;
        item.emit(e, s);
        e << YAML::EndMap;
      }
      e << YAML::EndSeq;
    };
    entries_.push_back(std::move(entry));
    return *this;
  }

  /// A check run after every key of this level was read; throw std::invalid_argument
  /// naming `node.where(key)` when a value is out of range.
  Schema& check(std::function<void(const T&, const ConfigNode&)> fn) {
    checks_.push_back(std::move(fn));
    return *this;
  }

  /// Reads this level's keys from `node` into `value` (absent keys keep their values).
  void read(const ConfigNode& node, T& value) const {
    for (const auto& e : entries_) e.read(node, value, e.required);
    for (const auto& c : checks_) c(value, node);
  }

  /// Reads a whole document into `value` (absent keys keep its values), then throws for
  /// any key nobody read.
  void load_into(const ConfigNode& root, T& value) const {
    read(root, value);
    root.finish();
  }
  /// load_into() a default-constructed T.
  T load(const ConfigNode& root) const {
    T value;
    load_into(root, value);
    return value;
  }

  /// Writes this level's keys into an open YAML map.
  void emit(YAML::Emitter& e, const T& value) const {
    for (const auto& entry : entries_) entry.emit(e, value);
  }

  /// The whole document as YAML text (`--dump-config`); reading it back gives `value`.
  std::string dump(const T& value) const {
    YAML::Emitter e;
    e << YAML::BeginMap;
    emit(e, value);
    e << YAML::EndMap;
    return e.c_str();
  }

 private:
  struct Entry {
    std::string key;
    bool required = false;
    std::function<void(const ConfigNode&, T&, bool)> read;
    std::function<void(YAML::Emitter&, const T&)> emit;
  };
  std::vector<Entry> entries_;
  std::vector<std::function<void(const T&, const ConfigNode&)>> checks_;
};

}  // namespace destein

#include "serve/serve_config.hpp"

#include <fmt/format.h>

#include <set>

#include "destein/steer/steering.hpp"
#include "experiment/config_node.hpp"
#include "experiment/experiment_schemas.hpp"
#include "serve/chat_rendering.hpp"

namespace destein {

Schema<ServeConfig> serve_config_schema() {
  using C = ServeConfig;
  Schema<ServeVectorsEntry> entry;
  entry.field("name", &ServeVectorsEntry::name)
      .required()
      .field("path", &ServeVectorsEntry::path)
      .required();
  Schema<SteeringOptions> steering;
  steering
      .field_as(
          "mode", [](SteeringOptions& o) -> SteeringMode& { return o.mode; }, parse_steering_mode,
          steering_mode_name)
      .field("alpha", &SteeringOptions::alpha)
      .field("layer_start", &SteeringOptions::layer_start)
      .field("layer_end", &SteeringOptions::layer_end)
      .field("top_k_heads", &SteeringOptions::top_k_heads)
      .field_as(
          "positions", [](SteeringOptions& o) -> SteeringPositions& { return o.positions; },
          parse_steering_positions, steering_positions_name)
      .field_as(
          "gate", [](SteeringOptions& o) -> SteeringGate& { return o.gate; }, parse_steering_gate,
          steering_gate_name)
      .field("gate_threshold", &SteeringOptions::gate_threshold);
  Schema<ServeMethodEntry> method;
  method.field("name", &ServeMethodEntry::name)
      .required()
      .custom(
          [](const ConfigNode& n, ServeMethodEntry& m) { read_decoding_method(n, m.method); },
          [](YAML::Emitter& e, const ServeMethodEntry& m) { emit_decoding_method(e, m.method); });
  Schema<C> s;
  s.include(&C::model, model_section_schema())
      .field("host", [](C& c) -> std::string& { return c.server.host; })
      .field("port", [](C& c) -> int& { return c.server.port; })
      .field("model_name", [](C& c) -> std::string& { return c.server.model_name; })
      .list("vectors", &C::vectors, entry)
      .list("methods", &C::methods, method)
      .section(
          "steering", [](C& c) -> SteeringOptions& { return c.server.steering_defaults; }, steering)
      .field("chat_template", &C::chat_template)
      .field("api_key_file", &C::api_key_file)
      .field("max_rows", [](C& c) -> int64_t& { return c.server.max_rows; })
      .field("max_queue", [](C& c) -> int64_t& { return c.server.max_queue; })
      .field("max_body_bytes", [](C& c) -> int64_t& { return c.max_body_bytes; })
      .field("request_timeout", [](C& c) -> double& { return c.server.request_timeout_s; })
      .field("http_threads", [](C& c) -> int& { return c.server.http_threads; })
      .field("max_connections", [](C& c) -> int64_t& { return c.max_connections; })
      .field("header_timeout", [](C& c) -> double& { return c.server.header_timeout_s; })
      .field("body_timeout", [](C& c) -> double& { return c.server.body_timeout_s; })
      .field("keep_alive_timeout", [](C& c) -> double& { return c.server.keep_alive_timeout_s; })
      .check([](const C& c, const ConfigNode& n) {
        if (c.server.max_rows <= 0)
          throw std::invalid_argument(n.where("max_rows") + ": max_rows must be positive");
        if (c.server.max_queue < 0)
          throw std::invalid_argument(n.where("max_queue") + ": max_queue must be >= 0");
        if (c.max_body_bytes <= 0)
          throw std::invalid_argument(n.where("max_body_bytes") +
                                      ": max_body_bytes must be positive");
        if (c.server.request_timeout_s <= 0) {
          throw std::invalid_argument(n.where("request_timeout") +
                                      ": request_timeout must be positive (seconds)");
        }
        for (const auto& [key, value] :
             {std::pair<const char*, double>{"header_timeout", c.server.header_timeout_s},
              {"body_timeout", c.server.body_timeout_s},
              {"keep_alive_timeout", c.server.keep_alive_timeout_s}}) {
          if (!(value > 0))
            throw std::invalid_argument(n.where(key) +
                                        fmt::format(": {} must be positive (seconds)", key));
        }
        if (c.max_connections <= 0)
          throw std::invalid_argument(n.where("max_connections") +
                                      ": max_connections must be positive");
        if (c.server.http_threads < 0)
          throw std::invalid_argument(n.where("http_threads") +
                                      ": http_threads must be >= 0 (0: max_rows + max_queue + 8)");
        if (c.server.port < 0 || c.server.port > 65535)
          throw std::invalid_argument(n.where("port") + ": port must be in [0, 65535]");
        if (c.chat_template != "auto") {
          try {
            parse_chat_template(c.chat_template);
          } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(n.where("chat_template") + ": " + e.what() + " or auto");
          }
        }
        std::set<std::string> names;
        for (const auto& v : c.vectors) {
          if (!names.insert(v.name).second) {
            throw std::invalid_argument(n.where("vectors") +
                                        fmt::format(": vectors name '{}' is given twice", v.name));
          }
        }
        names.clear();
        for (const auto& m : c.methods) {
          if (!names.insert(m.name).second) {
            throw std::invalid_argument(n.where("methods") +
                                        fmt::format(": method name '{}' is given twice", m.name));
          }
        }
      });
  return s;
}

ServeConfig load_serve_config(const std::filesystem::path& path) {
  ServeConfig c = serve_config_schema().load(ConfigNode::load_file(path));
  c.server.max_body_bytes = static_cast<size_t>(c.max_body_bytes);
  c.server.max_connections = static_cast<size_t>(c.max_connections);
  c.server.vectors.clear();
  for (const auto& v : c.vectors) c.server.vectors.emplace_back(v.name, v.path);
  c.server.methods.clear();
  for (const auto& m : c.methods) c.server.methods.emplace_back(m.name, m.method);
  return c;
}

}  // namespace destein

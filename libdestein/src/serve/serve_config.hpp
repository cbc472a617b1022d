#pragma once
/// `destein serve --config serve.yaml`: the server's options as YAML, through the same
/// table-driven Schema as every experiment (unknown keys and wrong types name file:line).
///
///   model: models/tiny-lm            # + tokenizer, device, dtype, threads, linear_backend
///   host: 127.0.0.1
///   port: 8000
///   model_name: tiny-lm
///   vectors:
///     - {name: detox, path: runs/tiny-lm/vectors.safetensors}
///   steering: {mode: headwise, alpha: 0.5, positions: all, gate: none}
///   methods:                         # decoding-time methods a request names ("method": NAME)
///     - {name: filter, method: word-filter, words: configs/words.txt}
///     - {name: debias, method: self-debias, lambda: 50}
///     - {name: dexperts, method: dexperts, expert: E, anti_expert: A, alpha: 2.0}
///   chat_template: auto              # llama-2, chatml, llama-3, gemma, plain, or auto (from the folder)
///   api_key_file: /etc/destein/key
///   max_rows: 32
///   max_queue: 64
///   max_body_bytes: 1048576
///   request_timeout: 300
///   http_threads: 0                  # 0: max_rows + max_queue + 8
///   max_connections: 1024
///   header_timeout: 10               # seconds; then 408
///   body_timeout: 30
///   keep_alive_timeout: 5

#include <filesystem>
#include <string>
#include <vector>

#include "destein/experiment/model_section.hpp"
#include "destein/serve/server.hpp"
#include "experiment/schema.hpp"

namespace destein {

struct ServeVectorsEntry {
  std::string name, path;
};

/// A `methods:` entry: a name requests use and the method's keys, as in a bench config.
struct ServeMethodEntry {
  std::string name;
  DecodingMethod method;
};

struct ServeConfig {
  ModelSection model;
  ServerOptions server;
  std::vector<ServeVectorsEntry> vectors;  ///< copied into server.vectors by load_serve_config()
  std::vector<ServeMethodEntry> methods;   ///< copied into server.methods by load_serve_config()
  std::string chat_template = "auto";
  std::string api_key_file;          ///< empty: no key
  int64_t max_body_bytes = 1 << 20;  ///< the YAML side of server.max_body_bytes (a size_t)
  int64_t max_connections = 1024;    ///< the YAML side of server.max_connections
};

/// The mapping of ServeConfig (for --dump-config as well).
Schema<ServeConfig> serve_config_schema();

/// Reads a serve YAML file. Throws std::invalid_argument naming file:line and the key.
ServeConfig load_serve_config(const std::filesystem::path& path);

}  // namespace destein

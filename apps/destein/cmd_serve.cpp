// `destein serve`: the OpenAI-compatible server (destein/serve/server.hpp).
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "commands.hpp"
#include "destein/serve/server.hpp"
#include "experiment/stop_request.hpp"
#include "serve/serve_config.hpp"

namespace destein::app {
namespace {

std::vector<std::pair<std::string, std::string>> parse_vectors_list(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      throw std::invalid_argument(
          fmt::format("--vectors: '{}' is not NAME=PATH (e.g. --vectors "
                      "detox=runs/v.safetensors,other=w.safetensors)",
                      item));
    }
    out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  return out;
}

std::string read_api_key(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("--api-key-file {}: cannot read it", path));
  std::string key;
  std::getline(in, key);
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty())
    throw std::runtime_error(
        fmt::format("--api-key-file {}: the first line (the key) is empty", path));
  return key;
}

// Loads the model, starts the server, serves until SIGTERM / SIGINT, drains.
int serve(const ServeConfig& config, bool dump_config) {
  if (dump_config) {
    fmt::print("{}\n", serve_config_schema().dump(config));
    return 0;
  }
  ServerOptions o = config.server;
  if (!config.api_key_file.empty()) o.api_key = read_api_key(config.api_key_file);
  LoadedModel loaded = load_model_section(config.model);
  o.chat_template = config.chat_template == "auto" ? detect_chat_template(config.model.model)
                                                   : parse_chat_template(config.chat_template);
  Server server(*loaded.model, *loaded.tokenizer, o);
  const int port = server.bind();
  // One line a script can wait for (tests and benchmarks read the port from it).
  fmt::print(
      "destein serve: listening on http://{}:{} (model {}, {} kernels, chat template {}, vectors "
      "{})\n",
      o.host, port, o.model_name, destein::linear_backend_name(loaded.model->linear_backend()),
      chat_template_name(o.chat_template), o.vectors.size());
  std::fflush(stdout);
  server.serve([] { return stop_signal() != 0; });
  if (stop_signal() != 0) {
    fmt::print(stderr, "destein serve: stopped by signal {} after finishing the running requests\n",
               stop_signal());
    return 128 + stop_signal();
  }
  return 0;
}

int run_serve(Args& args) {
  const bool dump_config = args.flag("dump-config", "print the resolved options as YAML and exit");
  if (auto file = args.get("config",
                           "serve YAML (docs/serving.md); the other options then go in the file")) {
    args.finish();
    return serve(load_serve_config(*file), dump_config);
  }
  ServeConfig c;
  c.model.model = args.require("model", "model folder or file");
  c.model.tokenizer =
      args.get_or("tokenizer", "", "tokenizer file or folder (default: next to the model)");
  c.model.device = args.get_or("device", c.model.device, "cpu or cuda[:N]");
  c.model.dtype = args.get_or("dtype", c.model.dtype, "float32, float16 or bfloat16");
  c.model.threads = static_cast<int>(args.get_int("threads", 0, "intra-op threads (0: all cores)"));
  c.model.linear_backend =
      args.get_or("linear-backend", c.model.linear_backend, "auto, blas, onednn or stable");
  ServerOptions& o = c.server;
  o.host = args.get_or("host", o.host, "address to listen on (0.0.0.0: every interface)");
  o.port =
      static_cast<int>(args.get_int("port", o.port, "port (0: any free port, printed at start)"));
  if (auto v = args.get("vectors", "NAME=PATH[,NAME=PATH...]: vectors sets requests may name"))
    o.vectors = parse_vectors_list(*v);
  const std::filesystem::path model_path(c.model.model);
  const std::string folder_name = model_path.has_filename()
                                      ? model_path.filename().string()
                                      : model_path.parent_path().filename().string();
  o.model_name = args.get_or("model-name", folder_name, "model id in /v1/models and responses");
  c.api_key_file = args.get_or("api-key-file", "",
                               "file whose first line is the key clients must send as Bearer");
  c.chat_template =
      args.get_or("chat-template", "auto",
                  "llama-2, chatml, llama-3, gemma, plain, or auto (from the model folder)");
  o.max_rows = args.get_int("max-rows", o.max_rows, "rows decoded together");
  o.max_queue = args.get_int("max-queue", o.max_queue, "requests waiting for rows before 429");
  o.max_body_bytes = static_cast<size_t>(args.get_int(
      "max-body-bytes", static_cast<int64_t>(o.max_body_bytes), "larger bodies get 413"));
  o.request_timeout_s = args.get_double("request-timeout", o.request_timeout_s,
                                        "seconds per request, queueing included (then 504)");
  o.http_threads = static_cast<int>(args.get_int(
      "http-threads", 0, "workers answering whole requests (0: max-rows + max-queue + 8)"));
  const int64_t max_connections = args.get_int(
      "max-connections", static_cast<int64_t>(o.max_connections), "open connections at most");
  o.header_timeout_s =
      args.get_double("header-timeout", o.header_timeout_s,
                      "seconds from a request's first byte to the end of its headers (then 408)");
  o.body_timeout_s =
      args.get_double("body-timeout", o.body_timeout_s,
                      "seconds from the end of the headers to the end of the body (then 408)");
  o.keep_alive_timeout_s = args.get_double("keep-alive-timeout", o.keep_alive_timeout_s,
                                           "seconds an idle connection stays open");
  o.steering_defaults.mode =
      parse_steering_mode(args.get_or("mode", "reference", "default steering mode of a request"));
  o.steering_defaults.alpha =
      args.get_double("alpha", o.steering_defaults.alpha, "default steering strength");
  o.steering_defaults.positions =
      parse_steering_positions(args.get_or("positions", "all", "default position window"));
  o.steering_defaults.gate = parse_steering_gate(args.get_or("gate", "none", "default gate"));
  args.finish();
  if (o.max_rows <= 0 || o.max_queue < 0)
    throw std::invalid_argument("--max-rows must be positive and --max-queue >= 0");
  if (o.request_timeout_s <= 0)
    throw std::invalid_argument("--request-timeout must be positive (seconds)");
  if (!(o.header_timeout_s > 0) || !(o.body_timeout_s > 0) || !(o.keep_alive_timeout_s > 0)) {
    throw std::invalid_argument(
        "--header-timeout, --body-timeout and --keep-alive-timeout must be positive (seconds)");
  }
  if (o.max_body_bytes == 0 || o.max_body_bytes > (size_t{1} << 40))
    throw std::invalid_argument("--max-body-bytes must be positive");
  if (max_connections <= 0 || o.http_threads < 0)
    throw std::invalid_argument("--max-connections must be positive and --http-threads >= 0");
  o.max_connections = static_cast<size_t>(max_connections);
  if (c.chat_template != "auto") parse_chat_template(c.chat_template);
  for (const auto& [name, path] : o.vectors) c.vectors.push_back({name, path});
  c.max_body_bytes = static_cast<int64_t>(o.max_body_bytes);
  c.max_connections = static_cast<int64_t>(o.max_connections);
  return serve(c, dump_config);
}

}  // namespace

DESTEIN_COMMAND(serve_cmd, "serve", "OpenAI-compatible HTTP server with per-request steering",
                run_serve);

}  // namespace destein::app

#include "model_args.hpp"

#include <fmt/format.h>

#include "destein/runtime/device.hpp"

#include <algorithm>

namespace destein::app {

ModelOptions read_model_options(Args& args) {
  ModelOptions opts;
  opts.device = parse_device(args.get_or("device", "cpu"));
  opts.dtype = parse_dtype(args.get_or("dtype", "float32"));
  opts.threads = static_cast<int>(args.get_int("threads", default_thread_count()));
  opts.linear_backend = parse_linear_backend(args.get_or("linear-backend", "auto"));
  return opts;
}

std::filesystem::path model_folder(const std::filesystem::path& model_path) {
  if (std::filesystem::is_directory(model_path)) return model_path;
  return model_path.has_parent_path() ? model_path.parent_path() : std::filesystem::path(".");
}

std::unique_ptr<Tokenizer> find_tokenizer(Args& args, const std::filesystem::path& model_path) {
  if (auto explicit_path = args.get("tokenizer")) return load_tokenizer(*explicit_path);
  const std::filesystem::path dir = model_folder(model_path);
  try {
    return load_tokenizer(dir);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format(
        "no tokenizer found next to the model in {} ({}); pass --tokenizer PATH", dir.string(),
        e.what()));
  }
}

ModelSection read_model_section(const ConfigNode& root) {
  ModelSection m;
  m.model = root.require<std::string>("model");
  m.tokenizer = root.get("tokenizer", m.tokenizer);
  m.device = root.get("device", m.device);
  m.dtype = root.get("dtype", m.dtype);
  m.threads = root.get("threads", m.threads);
  m.linear_backend = root.get("linear_backend", m.linear_backend);
  // Only the spelling is checked here: a config written for a GPU machine must still
  // parse (and --dump-config) on one without; availability is checked when loading.
  if (m.device != "cpu" && m.device.rfind("cuda", 0) != 0) {
    throw std::invalid_argument(fmt::format("{}: key device: expected cpu, cuda or cuda:N, found '{}'",
                                            root.where("device"), m.device));
  }
  parse_dtype(m.dtype);
  parse_linear_backend(m.linear_backend);
  return m;
}

void emit_model_section(YAML::Emitter& e, const ModelSection& m) {
  e << YAML::Key << "model" << YAML::Value << m.model << YAML::Key << "tokenizer" << YAML::Value << m.tokenizer;
  e << YAML::Key << "device" << YAML::Value << m.device << YAML::Key << "dtype" << YAML::Value << m.dtype;
  e << YAML::Key << "threads" << YAML::Value << m.threads << YAML::Key << "linear_backend" << YAML::Value
    << m.linear_backend;
}

LoadedModel load_model_section(const ModelSection& m) {
  ModelOptions opts;
  opts.device = parse_device(m.device);
  opts.dtype = parse_dtype(m.dtype);
  opts.threads = m.threads;
  opts.linear_backend = parse_linear_backend(m.linear_backend);
  LoadedModel out;
  out.model = load_model(m.model, opts);
  out.tokenizer = adapt_tokenizer_to_model(
      load_tokenizer(m.tokenizer.empty() ? model_folder(m.model) : std::filesystem::path(m.tokenizer)), out.model->config().model_type,
      out.model->config().bos_token_id);
  return out;
}

std::vector<SteeringPair> load_pair_file(const std::filesystem::path& path, const std::string& format,
                                         const PairLoadOptions& options) {
  std::string f = format;
  if (f == "auto") f = path.extension() == ".tsv" ? "paradetox" : "jsonl";
  if (f != "jsonl" && f != "paradetox") {
    throw std::invalid_argument(fmt::format("pair file format must be auto, jsonl or paradetox, found '{}'", format));
  }
  auto pairs = f == "paradetox" ? load_paradetox(path, options) : load_pairs_jsonl(path, options);
  const size_t before = pairs.size();
  pairs.erase(std::remove_if(pairs.begin(), pairs.end(), [](const SteeringPair& p) { return p.toxic == p.nontoxic; }),
              pairs.end());
  if (pairs.size() != before) {
    fmt::print(stderr, "pairs: dropped {} of {} with identical sides in {}\n", before - pairs.size(), before,
               path.string());
  }
  return pairs;
}

void read_generation_section(const ConfigNode& node, const std::string& samples_key, GenerationOptions& options) {
  options.num_samples = node.get(samples_key, options.num_samples);
  options.max_new_tokens = node.get("max_new_tokens", options.max_new_tokens);
  options.top_p = node.get("top_p", options.top_p);
  options.top_k = node.get("top_k", options.top_k);
  options.temperature = node.get("temperature", options.temperature);
  options.seed = node.get("seed", options.seed);
  options.batch_size = node.get("batch_size", options.batch_size);
}

void emit_generation_section(YAML::Emitter& out, const std::string& samples_key, const GenerationOptions& options) {
  out << YAML::Key << samples_key << YAML::Value << options.num_samples << YAML::Key << "max_new_tokens"
      << YAML::Value << options.max_new_tokens << YAML::Key << "top_p" << YAML::Value << options.top_p << YAML::Key
      << "top_k" << YAML::Value << options.top_k << YAML::Key << "temperature" << YAML::Value << options.temperature
      << YAML::Key << "seed" << YAML::Value << options.seed << YAML::Key << "batch_size" << YAML::Value
      << options.batch_size;
}

}  // namespace destein::app

#include "model_args.hpp"

#include <fmt/format.h>

#include "destein/runtime.hpp"

namespace destein::app {

ModelOptions read_model_options(Args& args) {
  ModelOptions opts;
  opts.device = parse_device(args.get_or("device", "cpu"));
  opts.dtype = parse_dtype(args.get_or("dtype", "float32"));
  opts.threads = static_cast<int>(args.get_int("threads", default_thread_count()));
  opts.linear_backend = parse_linear_backend(args.get_or("linear-backend", "auto"));
  return opts;
}

std::unique_ptr<Tokenizer> find_tokenizer(Args& args, const std::filesystem::path& model_path) {
  if (auto explicit_path = args.get("tokenizer")) return load_tokenizer(*explicit_path);
  std::filesystem::path dir =
      std::filesystem::is_directory(model_path) ? model_path : model_path.parent_path();
  if (dir.empty()) dir = ".";
  try {
    return load_tokenizer(dir);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format(
        "no tokenizer found next to the model in {} ({}); pass --tokenizer PATH", dir.string(),
        e.what()));
  }
}

}  // namespace destein::app

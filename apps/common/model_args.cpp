#include "model_args.hpp"

#include <fmt/format.h>

#include "destein/runtime/device.hpp"

namespace destein::app {

ModelOptions read_model_options(Args& args) {
  ModelOptions opts;
  opts.device = parse_device(args.get_or("device", "cpu", "cpu, cuda or cuda:N"));
  opts.dtype = parse_dtype(
      args.get_or("dtype", "float32", "compute dtype: float32, float16 (CUDA) or bfloat16"));
  opts.threads = static_cast<int>(args.get_int(
      "threads", default_thread_count(), "LibTorch threads (DESTEIN_THREADS, else all cores)"));
  opts.linear_backend = parse_linear_backend(args.get_or(
      "linear-backend", "auto",
      "linear kernels: auto (stable on CPU float32, else blas), stable, blas or onednn"));
  return opts;
}

std::unique_ptr<Tokenizer> find_tokenizer(Args& args, const std::filesystem::path& model_path) {
  if (auto explicit_path =
          args.get("tokenizer", "tokenizer file or folder (default: next to the model)"))
    return load_tokenizer(*explicit_path);
  // Named first: a missing --model would otherwise surface as a tokenizer missing from its
  // parent folder ("/" for /nonexistent).
  std::error_code ec;
  if (!std::filesystem::exists(model_path, ec)) {
    throw std::invalid_argument(fmt::format(
        "--model {}: no such file or folder (expected a model folder or checkpoint file)",
        model_path.string()));
  }
  const std::filesystem::path dir = model_folder(model_path);
  try {
    return load_tokenizer(dir);
  } catch (const std::exception& e) {
    throw std::runtime_error(
        fmt::format("no tokenizer found next to the model in {} ({}); pass --tokenizer PATH",
                    dir.string(), e.what()));
  }
}

}  // namespace destein::app

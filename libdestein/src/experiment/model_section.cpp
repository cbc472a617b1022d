#include "destein/experiment/model_section.hpp"

#include <fmt/format.h>

#include <torch/cuda.h>

#include <algorithm>
#include <thread>

#include "destein/runtime/device.hpp"
#include "experiment/experiment_schemas.hpp"
#include "parallel/process_group.hpp"
#include "parallel/rank_placement.hpp"

namespace destein {

Schema<ModelSection> model_section_schema() {
  Schema<ModelSection> s;
  s.field("model", &ModelSection::model)
      .required()
      .field("tokenizer", &ModelSection::tokenizer)
      .field("device", &ModelSection::device)
      .field("dtype", &ModelSection::dtype)
      .field("threads", &ModelSection::threads)
      .field("linear_backend", &ModelSection::linear_backend)
      .check([](const ModelSection& m, const ConfigNode& node) {
        if (m.device != "cpu" && m.device.rfind("cuda", 0) != 0) {
          throw std::invalid_argument(
              fmt::format("{}: key device: expected cpu, cuda or cuda:N, found '{}'",
                          node.where("device"), m.device));
        }
        try {
          parse_dtype(m.dtype);
          parse_linear_backend(m.linear_backend);
        } catch (const std::exception& e) {
          throw std::invalid_argument(fmt::format("{}: {}", node.where(), e.what()));
        }
      });
  return s;
}

Schema<GenerationOptions> generation_schema(const std::string& samples_key) {
  Schema<GenerationOptions> s;
  s.field(samples_key, &GenerationOptions::num_samples)
      .field("max_new_tokens", &GenerationOptions::max_new_tokens)
      .field("top_p", &GenerationOptions::top_p)
      .field("top_k", &GenerationOptions::top_k)
      .field("temperature", &GenerationOptions::temperature)
      .field("seed", &GenerationOptions::seed)
      .field("batch_size", &GenerationOptions::batch_size);
  return s;
}

std::filesystem::path model_folder(const std::filesystem::path& model_path) {
  if (std::filesystem::is_directory(model_path)) return model_path;
  return model_path.has_parent_path() ? model_path.parent_path() : std::filesystem::path(".");
}

ModelSection place_on_rank(const ModelSection& section, const ProcessGroup& group) {
  if (group.size() == 1) return section;
  ModelSection m = section;
  const int gpus = m.device == "cuda" ? static_cast<int>(torch::cuda::device_count()) : 0;
  m.device = rank_device(m.device, group.local_rank(), gpus);
  m.threads = rank_threads(m.threads, group.local_size(),
                           static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return m;
}

LoadedModel load_model_section(const ModelSection& m) {
  ModelOptions opts;
  opts.device = parse_device(m.device);
  opts.dtype = parse_dtype(m.dtype);
  opts.threads = m.threads;
  opts.linear_backend = parse_linear_backend(m.linear_backend);
  LoadedModel out;
  out.model = load_model(m.model, opts);
  const std::filesystem::path tokenizer =
      m.tokenizer.empty() ? model_folder(m.model) : std::filesystem::path(m.tokenizer);
  out.tokenizer = adapt_tokenizer_to_model(
      load_tokenizer(tokenizer), out.model->config().model_type, out.model->config().bos_token_id);
  return out;
}

}  // namespace destein

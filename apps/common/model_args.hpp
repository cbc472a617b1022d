#pragma once
// The options every model-running command shares: --model, --device, --dtype, --threads,
// and tokenizer discovery next to the model.

#include <filesystem>
#include <memory>
#include <string>

#include "args.hpp"
#include "destein/steer/pairs.hpp"
#include "yaml_config.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein::app {

/// Reads --device (cpu), --dtype (float32), --threads (all cores / DESTEIN_THREADS).
ModelOptions read_model_options(Args& args);

/// The folder a model's companion files (tokenizer) sit in: the model itself when it is a
/// folder, else the folder holding the archive ("." for a bare file name).
std::filesystem::path model_folder(const std::filesystem::path& model_path);

/// --tokenizer PATH if given, else the model's folder (or the folder holding the archive).
/// Throws std::runtime_error saying to pass --tokenizer when none is found.
std::unique_ptr<Tokenizer> find_tokenizer(Args& args, const std::filesystem::path& model_path);

/// The model keys every YAML experiment shares.
struct ModelSection {
  std::string model;
  std::string tokenizer;  ///< empty: next to the model
  std::string device = "cpu";
  std::string dtype = "float32";
  int threads = 0;        ///< 0: all cores
  std::string linear_backend = "auto";
};

/// Reads model (required), tokenizer, device, dtype, threads, linear_backend.
ModelSection read_model_section(const ConfigNode& root);
/// Writes the same keys into an open YAML map.
void emit_model_section(YAML::Emitter& out, const ModelSection& section);

/// The sampling keys the YAML experiments share (`samples_key` is "samples" in
/// destein-bench, "samples_per_target" in destein pairs): max_new_tokens, top_p, top_k,
/// temperature, seed, batch_size. Absent keys keep the values already in `options`.
void read_generation_section(const ConfigNode& node, const std::string& samples_key, GenerationOptions& options);
/// Writes the same keys into an open YAML map.
void emit_generation_section(YAML::Emitter& out, const std::string& samples_key, const GenerationOptions& options);

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};
LoadedModel load_model_section(const ModelSection& section);

/// A pair file by format ("auto": .tsv is ParaDetox, anything else JSON Lines), without
/// pairs whose two sides are identical (ParaDetox has rows whose rewrite is unchanged).
std::vector<SteeringPair> load_pair_file(const std::filesystem::path& path, const std::string& format,
                                         const PairLoadOptions& options = {});

}  // namespace destein::app

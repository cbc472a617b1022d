#pragma once
/// The keys every experiment that runs a model shares: the model and where it runs (at
/// the top of the file), and the sampling keys of a `generation:` section.

#include <filesystem>
#include <memory>
#include <string>

#include "destein/runtime/generate.hpp"
#include "destein/runtime/model.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein {

/// `model`, `tokenizer`, `device`, `dtype`, `threads`, `linear_backend`.
struct ModelSection {
  std::string model;
  std::string tokenizer;  ///< empty: next to the model
  std::string device = "cpu";
  std::string dtype = "float32";
  int threads = 0;  ///< 0: all cores
  std::string linear_backend = "auto";
};

/// The folder a model's companion files (tokenizer) sit in: the model itself when it is a
/// folder, else the folder holding the archive ("." for a bare file name).
std::filesystem::path model_folder(const std::filesystem::path& model_path);

/// A model and its tokenizer, adapted to each other (adapt_tokenizer_to_model).
struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

class ProcessGroup;

/// The section as one rank of a sharded run uses it: `device: cuda` becomes
/// cuda:(local rank mod this machine's GPUs), `threads: 0` this machine's cores / its
/// ranks (parallel/rank_placement.hpp). Unchanged for a group of one process.
ModelSection place_on_rank(const ModelSection& section, const ProcessGroup& group);

/// Loads the section's model on its device and dtype, and its tokenizer (`tokenizer`, or
/// the model's folder). Throws what load_model() and load_tokenizer() throw.
LoadedModel load_model_section(const ModelSection& section);

}  // namespace destein

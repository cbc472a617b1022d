#pragma once
// The command-line options every model-running command shares: --model, --device, --dtype,
// --threads, and tokenizer discovery next to the model. The YAML side of the same keys
// is destein/experiment/model_section.hpp.

#include <filesystem>
#include <memory>

#include "args.hpp"
#include "destein/experiment/model_section.hpp"
#include "destein/runtime/model.hpp"
#include "destein/text/tokenizer.hpp"

namespace destein::app {

/// Reads --device (cpu), --dtype (float32), --threads (all cores / DESTEIN_THREADS).
ModelOptions read_model_options(Args& args);

/// --tokenizer PATH if given, else the model's folder (or the folder holding the archive).
/// Throws std::runtime_error saying to pass --tokenizer when none is found.
std::unique_ptr<Tokenizer> find_tokenizer(Args& args, const std::filesystem::path& model_path);

}  // namespace destein::app

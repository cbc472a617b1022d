#pragma once
// The options every model-running command shares: --model, --device, --dtype, --threads,
// and tokenizer discovery next to the model.

#include <filesystem>
#include <memory>
#include <string>

#include "args.hpp"
#include "destein/model.hpp"
#include "destein/tokenizer.hpp"

namespace destein::app {

/// Reads --device (cpu), --dtype (float32), --threads (all cores / DESTEIN_THREADS).
ModelOptions read_model_options(Args& args);

/// --tokenizer PATH if given, else the model's folder (or the folder holding the archive).
/// Throws std::runtime_error saying to pass --tokenizer when none is found.
std::unique_ptr<Tokenizer> find_tokenizer(Args& args, const std::filesystem::path& model_path);

}  // namespace destein::app

#pragma once
/// The data folder (the staged data sets: RealToxicityPrompts, ParaDetox, the labelled
/// toxicity sets, the LM corpus) and paths inside it. Never copied into the project.

#include <filesystem>
#include <string>

namespace destein {

/// The data folder: `configured` when not empty, else $DESTEIN_DATA, else the build's
/// DESTEIN_DEFAULT_DATA_DIR (../shared/data beside the checkout). Throws
/// std::runtime_error naming the candidate and where it came from when it is not a folder.
std::filesystem::path resolve_data_dir(const std::string& configured);

/// A data path from a config: absolute paths as they are; relative ones that exist under
/// the current directory (files a run wrote, e.g. runs/demo/pairs.jsonl) as they are;
/// other relative ones against, in order, `data_dir` (if non-empty), $DESTEIN_DATA and the
/// build default. Does not check that the result exists.
std::filesystem::path resolve_data_path(const std::string& relative,
                                        const std::string& data_dir = "");

}  // namespace destein

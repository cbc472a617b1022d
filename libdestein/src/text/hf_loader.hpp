// Private: load_hf_tokenizer from JSON already parsed (the tokenizer factory reads a
// tokenizer.json once to pick its loader).
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "text/hf_tokenizer.hpp"

namespace destein::text_detail {

/// load_hf_tokenizer() of the parsed `root` of file `path` (named in errors; its folder is
/// searched for tokenizer_config.json).
std::unique_ptr<HfTokenizer> load_hf_tokenizer_json(const nlohmann::json& root,
                                                    const std::filesystem::path& path);

}  // namespace destein::text_detail

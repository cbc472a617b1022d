// Private: the identity of a bench run, and the check that a resumed generations file was
// started with the same settings.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "destein/experiment/bench_experiment.hpp"

namespace destein {

/// Everything that decides what the generations file of `method` on `set` holds: the
/// model, tokenizer, prompts, steering, generation, scorer and evaluator (files by size
/// and, when small, content hash). Settings a run of an older version did not have are
/// written only when they differ from their defaults, so its files still resume.
nlohmann::json bench_run_settings(const BenchExperiment& experiment, const BenchMethod& method,
                                  const BenchPromptSet& set);

/// Identity of a file without reading a multi-gigabyte model: {path, bytes} and, up to
/// 64 MiB (vectors, scorers, generations), fnv1a64 of the content; a folder by its
/// model.pt / model.safetensors(.index.json); null for an empty path, the path itself for
/// a file that cannot be read.
nlohmann::json file_identity(const std::string& path);

/// What decides a scorer's scores: its kind, its file or folder (size and, when small,
/// content hash; Perspective: none) and, for hf-classifier, the label.
nlohmann::json bench_scorer_settings(const BenchScorer& scorer);

/// Writes <generations>.settings.json, or, when the generations file already holds lines
/// and a settings file exists, checks `settings` against it. Throws std::runtime_error
/// naming the file and the first setting that differs.
void check_resume_settings(const std::filesystem::path& generations,
                           const nlohmann::json& settings);

}  // namespace destein

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

/// Writes <generations>.settings.json, or, when the generations file already holds lines
/// and a settings file exists, checks `settings` against it. Throws std::runtime_error
/// naming the file and the first setting that differs.
void check_resume_settings(const std::filesystem::path& generations,
                           const nlohmann::json& settings);

}  // namespace destein

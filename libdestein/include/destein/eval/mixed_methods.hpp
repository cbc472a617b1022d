#pragma once
/// Several methods that share a model evaluated in one batch: the units (method, prompt)
/// go through the model together, each method ("track") into its own generations file,
/// the same bytes as run_generation_eval() run on each method apart.
///
///   destein::Hooks hooks;
///   destein::SteeringController control(hooks, model->config(), model->device());
///   std::vector<destein::SteeringStack> stacks = {{}, {reference_plan}, {headwise_plan}};
///   std::vector<destein::EvalTrack> tracks = {{"base", "out/base.jsonl"},
///                                             {"ref", "out/ref.jsonl"}, {"head",
///                                             "out/head.jsonl"}};
///   auto reports = destein::run_mixed_generation_eval(
///       *model, *tok, prompts, tracks, &hooks,
///       [&](const std::vector<int64_t>& row_tracks) {
///         std::vector<destein::SteeringStack> rows;
///         for (int64_t t : row_tracks) rows.push_back(stacks[t]);
///         control.set_rows(std::move(rows));
///       },
///       &scorer, &evaluator, options);
///   // per method: destein::SteeringHandle(shared_control, stacks[t]).report()

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "destein/eval/harness.hpp"

namespace destein {

/// One method of a mixed evaluation.
struct EvalTrack {
  std::string method;            ///< recorded in every line of its file
  std::filesystem::path output;  ///< its generations file (resumed on its own)
};

/// Called before every forward call of the generation with the track (index into the
/// tracks) of each row of that call: the prompt pass has one row per unit, a decode step
/// one per (unit, sample). The caller points each row at its track's state (steering).
using EvalTrackRows = std::function<void(const std::vector<int64_t>& row_tracks)>;

/// run_generation_eval() for several tracks at once. Every (track, prompt) whose prompt
/// is not yet in the track's file is a unit; units are taken prompt by prompt (all tracks
/// of prompt 0, then of prompt 1, ...), and options.prompts_per_batch counts units. Each
/// unit is its own prompt for generate() (its own prompt pass) with the prompt's own seed,
/// so with row-stable kernels every file is byte for byte the file run_generation_eval()
/// writes for that track alone (options.method replaced by the track's), whatever the
/// batching, pipelining or resuming. Each file is read, resumed (a partial last line cut,
/// its prompts skipped; a complete file adds no units) and written in prompt order on its
/// own; a batch's lines go to the tracks' files in track order, each file flushed.
/// `hooks` (may be null) is active for every row; `select_rows` (may be empty: every
/// track alike) gives rows different state. `progress` counts units (finished, total).
/// Sharded (`group` with more than one rank): batches dealt round-robin, rank 0 writes
/// every file, as run_generation_eval(). Returns one report per track; batches and the
/// stage times are those of the whole run, the same in each. Throws
/// std::invalid_argument for no tracks, two tracks writing one file, or
/// options.generation.before_forward set (the harness lays out rows itself), and what
/// run_generation_eval() throws.
std::vector<EvalRunReport> run_mixed_generation_eval(
    const Model& model, const Tokenizer& tokenizer, const std::vector<EvalPrompt>& prompts,
    const std::vector<EvalTrack>& tracks, const Hooks* hooks, const EvalTrackRows& select_rows,
    ToxicityScorer* scorer, const PerplexityEvaluator* evaluator, const EvalRunOptions& options,
    const std::function<void(int64_t, int64_t)>& progress = {},
    const ProcessGroup* group = nullptr);

}  // namespace destein

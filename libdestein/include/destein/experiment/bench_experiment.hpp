#pragma once
/// The RealToxicityPrompts-style evaluation as an experiment (`destein-bench run --config`,
/// configs/demo.yaml): for every method (base, or steering entries) and prompt set, a
/// resumable generations file, then results.json / .csv / .md and the trade-off plot.
///
///     auto e = destein::load_bench_experiment("configs/demo.yaml");
///     e.prompts.resize(1);
///     e.generation.num_samples = 5;
///     e.output = "runs/quick";
///     auto report = destein::run_bench_experiment(e);
///     std::cout << report.table;

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "destein/eval/harness.hpp"
#include "destein/experiment/model_section.hpp"
#include "destein/runtime/decoding_method.hpp"
#include "destein/score/torchscript_scorer.hpp"
#include "destein/steer/steering.hpp"

namespace destein {

/// `prompts:` items: {name, path, subset, limit, skip_malformed, exclude}.
struct BenchPromptSet {
  std::string name;
  std::string path;
  PromptFileOptions options;
  /// Prompt files (same formats, data-folder relative like `path`) whose prompt texts are
  /// left out of this set before `limit` counts: a dev set disjoint from a test set.
  std::vector<std::string> exclude;
};

/// The prompts of one set: its file, subset and limit, without the prompts of its
/// `exclude` files (an exact match of the text). Paths resolve against `data_dir` as the
/// experiment's do. `skipped` (may be null) counts malformed lines skipped.
std::vector<EvalPrompt> load_bench_prompt_set(const BenchPromptSet& set,
                                              const std::string& data_dir,
                                              int64_t* skipped = nullptr);

/// One steering entry of a method: a vectors file and how it is applied.
struct BenchSteeringEntry {
  std::string vectors;
  SteeringOptions steering;  ///< mode, alpha, layers, top_k_heads, positions, gate
};

/// `methods:` items. One entry: its keys on the method itself; several: a `steering:`
/// list, applied in order. No entry: the unsteered model. Or a decoding-time method
/// instead of steering (`method: dexperts | self-debias | word-filter` with its keys:
/// expert, anti_expert, alpha, filter_p; lambda, prefixes; words; docs/methods.md).
struct BenchMethod {
  std::string name = "base";
  std::string variant;  ///< the trade-off plot's curve; empty: from the settings
  std::vector<BenchSteeringEntry> steering;
  DecodingMethod decoding;  ///< kind empty: none
};

/// A toxicity instrument: the `scorer:` section (the scores written into the generations
/// files), or an item of the `scorers:` list (the same keys plus `name`).
struct BenchScorer {
  std::string name;  ///< `scorers:` items: the folder OUTPUT/scorers/<name>/ and the tables' column
  std::string kind = "linear";  ///< linear | perspective | torchscript | hf-classifier
  std::string path;             ///< linear: weights (empty: the default); perspective: cache file;
                                ///< torchscript: module; hf-classifier: folder
  std::string label;            ///< hf-classifier: the label scored (empty: toxic or toxicity)
  double requests_per_second = 1.0;  ///< perspective
  TorchScriptScorerOptions torchscript;
};

struct BenchExperiment {
  BenchExperiment();  ///< the paper's generation: 25 samples x 20 tokens, top-p 0.9
  ModelSection model;
  std::string data_dir;
  std::vector<BenchPromptSet> prompts;
  std::vector<BenchMethod> methods = {BenchMethod{}};
  GenerationOptions generation;
  /// How fast, not what: N prompts x samples rows per forward (0: auto, from max_rows),
  /// the row budget (0: the device's default), generation overlapped with scoring. None
  /// of them changes the files, so a run may resume with other values.
  int64_t prompts_per_batch = 0;
  int64_t max_rows = 0;
  bool pipelined = false;
  /// Evaluate the methods together: per prompt set, the units (method, prompt) share the
  /// forward passes (prompts_per_batch counts units, each row steered by its method), each
  /// method still writing its own file. The same files and results as running them apart.
  bool mix_methods = false;
  BenchScorer scorer;  ///< scores the generations as they are written
  /// More instruments: once a generations file is complete, each scores every generation
  /// again (OUTPUT/scorers/<name>/<method>/<set>.generations.jsonl, redone only when the
  /// generations or the scorer changed); results give EMT and TP under every instrument
  /// and how far the methods' EMT rankings agree. Empty: none (the files as before).
  std::vector<BenchScorer> scorers;
  bool perplexity = true;
  ModelSection evaluator;  ///< model empty: the generating model evaluates itself
  std::string output = "runs/bench";
};

/// Reads a YAML file; errors name file:line and the key.
BenchExperiment load_bench_experiment(const std::filesystem::path& yaml);
/// The fully resolved experiment as YAML.
std::string dump_bench_experiment(const BenchExperiment& experiment);

/// The curve a method lies on in the trade-off plot: its settings without the first
/// entry's alpha ("base" for the unsteered model).
std::string bench_method_variant(const BenchMethod& method);

struct BenchRunReport {
  nlohmann::json results;  ///< one object per (method, subset), as in results.json
  std::string table;       ///< results.md
  std::filesystem::path output;
};

/// Runs every method on every prompt set (with mix_methods, all methods of a prompt set in
/// one run_mixed_generation_eval()), resuming generations files already there (a
/// file written with other settings is refused, naming the setting), and writes the
/// results. Progress on stderr. Holds the output folder's lock (io/output_lock.hpp) for
/// the whole run. Throws what loading the model, scorer, vectors and prompts throws, and
/// std::runtime_error naming the owner when another process writes the folder.
///
/// Sharded over `group` (every rank calls it): each prompt set's batches are dealt over
/// the ranks (run_generation_eval), rank 0 holds the lock and writes every file, the
/// same bytes as a one-process run (apart from the timing fields). `device: cuda` becomes
/// cuda:(local rank mod GPUs) and `threads: 0` the machine's cores / its ranks
/// (parallel/rank_placement.hpp). The other ranks return an empty report. The Perspective
/// scorer is refused there (one cache file, one request rate: score on one process).
BenchRunReport run_bench_experiment(const BenchExperiment& experiment,
                                    const ProcessGroup* group = nullptr);

}  // namespace destein

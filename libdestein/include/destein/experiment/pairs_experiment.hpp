#pragma once
/// The self-induced pairs experiment (`destein pairs --config`, configs/pairs.yaml): seed
/// pairs -> the model rewrites them by few-shot prompting -> scorer filter -> a JSON Lines
/// pair file. Load it from YAML, change it in code, run it:
///
///     auto e = destein::load_pairs_experiment("configs/demo-pairs.yaml");
///     e.induction.num_targets = 20;
///     auto report = destein::run_pairs_experiment(e);

#include <filesystem>
#include <string>

#include "destein/experiment/model_section.hpp"
#include "destein/steer/self_induced.hpp"

namespace destein {

struct PairsExperiment {
  PairsExperiment();  ///< the defaults of configs/pairs.yaml's keys
  ModelSection model;
  std::string data_dir;  ///< empty: $DESTEIN_DATA or the build default
  std::string seeds_path = "paradetox/paradetox.tsv";
  std::string seeds_format = "auto";  ///< auto | jsonl | paradetox
  SelfInductionOptions induction;     ///< direction is read from `direction`
  std::string direction = "detoxify";
  bool scorer_enabled = true;  ///< false: pairs are written unfiltered
  std::string scorer_path;     ///< empty: the project's linear scorer
  std::string output = "runs/pairs.jsonl";
};

/// Reads a YAML file; errors name file:line and the key (unknown keys, wrong types).
PairsExperiment load_pairs_experiment(const std::filesystem::path& yaml);
/// The fully resolved experiment as YAML; loading it back gives the same experiment.
std::string dump_pairs_experiment(const PairsExperiment& experiment);

struct PairsRunReport {
  SelfInductionReport induction;
  int64_t seed_pairs = 0;     ///< distinct seed pairs read
  int64_t max_positions = 0;  ///< the model's context
  std::filesystem::path output;
};

/// Runs the experiment, with a progress bar on stderr, and writes `output`, holding its
/// lock (`<output>.lock`, io/output_lock.hpp) for the whole run. Throws what loading the
/// model, the seeds and the scorer throws, and std::runtime_error naming the owner when
/// another process writes the same file. Sharded over `group` (every rank calls it): the
/// rewrites are split over the ranks (self_induce_pairs), rank 0 writes the same file as
/// one process; the other ranks return a report without output.
PairsRunReport run_pairs_experiment(const PairsExperiment& experiment,
                                    const ProcessGroup* group = nullptr);

}  // namespace destein

#pragma once
/// The steering-vectors experiment (`destein vectors --config`, configs/vectors.yaml):
/// steering pairs -> site activations of both sides -> head-wise directions and per-head
/// probes -> a vectors file, a probe heatmap and the pairs used.
///
///     auto e = destein::load_vectors_experiment("configs/demo-vectors-z.yaml");
///     e.num_pairs = 40;
///     e.output = "runs/mine.safetensors";
///     auto report = destein::run_vectors_experiment(e);

#include <filesystem>
#include <string>

#include "destein/experiment/model_section.hpp"
#include "destein/steer/pairs.hpp"
#include "destein/steer/probes.hpp"

namespace destein {

struct VectorsExperiment {
  ModelSection model;
  std::string data_dir;  ///< empty: $DESTEIN_DATA or the build default
  std::string pairs_path = "paradetox/paradetox.tsv";
  std::string pairs_format = "auto";  ///< auto | jsonl | paradetox
  int64_t num_pairs = 20;             ///< 0: every pair of the file
  uint64_t seed = 0;                  ///< which pairs are drawn
  bool first_neutral_only = false;
  PairPrefixes prefixes;
  std::string site = "attn_out";  ///< attn_out | z
  int64_t last_k = 8;
  int64_t batch_size = 8;
  bool probes = true;
  ProbeOptions probe;
  std::string output = "runs/vectors.safetensors";
  std::string heatmap;  ///< empty: <output without extension>.probes.svg
};

/// Reads a YAML file; errors name file:line and the key.
VectorsExperiment load_vectors_experiment(const std::filesystem::path& yaml);
/// The fully resolved experiment as YAML.
std::string dump_vectors_experiment(const VectorsExperiment& experiment);

struct VectorsRunReport {
  std::filesystem::path vectors;       ///< the vectors file written
  std::filesystem::path pairs;         ///< the pairs used, as JSON Lines
  std::filesystem::path heatmap;       ///< empty without probes
  std::filesystem::path pairs_source;  ///< the pair file read
  int64_t pairs_available = 0;
  int64_t pairs_used = 0;
  std::string site;  ///< attn_out or hook_z
  int64_t layers = 0, heads = 0, head_dim = 0;
  double probe_mean_accuracy = 0.0, probe_best_accuracy = 0.0;
};

/// Runs the experiment with progress bars on stderr, holding the output's lock
/// (`<output>.lock`, io/output_lock.hpp). Throws std::invalid_argument when num_pairs
/// exceeds the pair file, what loading the model and pairs throws, and
/// std::runtime_error naming the owner when another process writes the same file.
/// Sharded over `group` (every rank calls it): each rank captures the activations of one
/// contiguous block of whole batches of pairs (parallel/work_split.hpp), rank 0 gathers
/// them in pair order, fits directions and probes and writes the same files as one
/// process; the other ranks return a report without files.
VectorsRunReport run_vectors_experiment(const VectorsExperiment& experiment,
                                        const ProcessGroup* group = nullptr);

}  // namespace destein

// `destein vectors --config FILE`: steering pairs -> site activations -> directions and
// per-head probes -> a vectors file (+ probe heatmap and the pairs used). The experiment
// itself is destein/experiment/vectors_experiment.hpp.
#include <fmt/format.h>

#include <iostream>

#include "commands.hpp"
#include "destein/experiment/vectors_experiment.hpp"
#include "program_group.hpp"

namespace destein::app {
namespace {

int run_vectors(Args& args) {
  const std::string config_path =
      args.require("config", "the experiment YAML (e.g. configs/vectors.yaml)");
  const bool dump = args.flag("dump-config", "print the fully resolved experiment and exit");
  auto output_override = args.get("output", "the vectors file to write (replaces output:)");
  auto pairs_override = args.get("pairs", "the pair file to read (replaces pairs.path:)");
  const int64_t num_pairs_override = args.get_int(
      "num-pairs", -1, "pairs sampled from the file, 0: all (replaces pairs.num_pairs:)");
  const bool no_probes =
      args.flag("no-probes",
                "fit no probes (replaces probes.enabled:): headwise mode weighs heads uniformly");
  const int64_t threads_override =
      args.get_int("threads", -1, "LibTorch threads (-1: the config's)");
  args.finish();
  VectorsExperiment c = load_vectors_experiment(config_path);
  if (output_override) c.output = *output_override;
  if (pairs_override) c.pairs_path = *pairs_override;
  if (num_pairs_override >= 0) c.num_pairs = num_pairs_override;
  if (no_probes) c.probes = false;
  if (threads_override >= 0) c.model.threads = static_cast<int>(threads_override);
  if (dump) {
    std::cout << dump_vectors_experiment(c) << "\n";
    return 0;
  }
  const VectorsRunReport r = run_vectors_experiment(c, &program_group());
  if (!program_group().is_root()) return 0;
  if (!r.heatmap.empty()) {
    fmt::print(stderr, "probes: mean accuracy {:.3f}, best {:.3f}; heatmap {}\n",
               r.probe_mean_accuracy, r.probe_best_accuracy, r.heatmap.string());
  }
  fmt::print("wrote {} (directions {} x {} x {}, site {}, {} pairs) and {}\n", r.vectors.string(),
             r.layers, r.heads, r.head_dim, r.site, r.pairs_used, r.pairs.string());
  return 0;
}

}  // namespace

DESTEIN_COMMAND(vectors_cmd, "vectors",
                "compute head-wise steering directions and probes (--config FILE [--pairs FILE] "
                "[--num-pairs N] [--no-probes] [--output FILE])",
                run_vectors);

}  // namespace destein::app

// `destein pairs --config FILE`: self-induced steering pairs from seed pairs, filtered by
// the toxicity scorer, written as JSON Lines with provenance per pair. The experiment
// itself is destein/experiment/pairs_experiment.hpp.
#include <fmt/format.h>

#include <iostream>

#include "commands.hpp"
#include "destein/experiment/pairs_experiment.hpp"
#include "program_group.hpp"

namespace destein::app {
namespace {

int run_pairs(Args& args) {
  const std::string config_path =
      args.require("config", "the experiment YAML (e.g. configs/pairs.yaml)");
  const bool dump = args.flag("dump-config", "print the fully resolved experiment and exit");
  const int64_t threads_override =
      args.get_int("threads", -1, "LibTorch threads (-1: the config's)");
  // --seed replaces both the target draw's and the sampling's seed; --output the file.
  const int64_t seed_override =
      args.get_int("seed", -1, "replaces the target draw's and the sampling's seed");
  const auto output_override = args.get("output", "the pair file to write (replaces output:)");
  args.finish();
  PairsExperiment c = load_pairs_experiment(config_path);
  if (threads_override >= 0) c.model.threads = static_cast<int>(threads_override);
  if (seed_override >= 0)
    c.induction.seed = c.induction.generation.seed = static_cast<uint64_t>(seed_override);
  if (output_override) c.output = *output_override;
  if (dump) {
    std::cout << dump_pairs_experiment(c) << "\n";
    return 0;
  }
  const PairsRunReport run = run_pairs_experiment(c, &program_group());
  if (!program_group().is_root()) return 0;
  const auto& report = run.induction;
  fmt::print(
      "{} rewrites: kept {} pairs{}; dropped {} empty, {} unchanged, {} duplicates, {} toxic side "
      "below {}, {} "
      "non-toxic side at or above {}, {} unscored\nwrote {}\n",
      report.generated, report.kept, report.filtered ? "" : " (UNFILTERED: no scorer)",
      report.empty, report.unchanged, report.duplicates, report.rejected_toxic,
      c.induction.toxic_min, report.rejected_nontoxic, c.induction.nontoxic_max, report.unscored,
      run.output.string());
  if (report.demonstrations_dropped > 0 || report.targets_too_long > 0) {
    fmt::print(
        "the model's context ({} positions) left out {} demonstrations and {} targets that did not "
        "fit\n",
        run.max_positions, report.demonstrations_dropped, report.targets_too_long);
  }
  return 0;
}

}  // namespace

DESTEIN_COMMAND(
    pairs_cmd, "pairs",
    "self-induced steering pairs from seed pairs (--config FILE [--seed S] [--output FILE])",
    run_pairs);

}  // namespace destein::app

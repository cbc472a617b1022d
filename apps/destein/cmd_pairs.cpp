// `destein pairs --config FILE`: self-induced steering pairs from seed pairs, filtered by
// the toxicity scorer, written as JSON Lines with provenance per pair.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <iostream>

#include "commands.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/runtime/device.hpp"
#include "destein/steer/self_induced.hpp"
#include "model_args.hpp"
#include "progress.hpp"
#include "stop_signal.hpp"
#include "yaml_config.hpp"

namespace destein::app {
namespace {

struct PairsConfig {
  ModelSection model;
  std::string data_dir;
  std::string seeds_path = "paradetox/paradetox.tsv";
  std::string seeds_format = "auto";
  SelfInductionOptions induction;
  std::string direction = "detoxify";
  bool scorer_enabled = true;
  std::string scorer_path;  // empty: the project's trained linear scorer
  std::string output = "runs/pairs.jsonl";
};

PairsConfig read_pairs_config(const ConfigNode& root) {
  PairsConfig c;
  c.induction.generation.num_samples = 2;
  c.induction.generation.max_new_tokens = 40;
  c.induction.generation.temperature = 0.7;
  c.induction.generation.top_p = 0.9;
  c.induction.generation.batch_size = 16;
  c.induction.generation.stop_at_eos = true;
  c.model = read_model_section(root);
  c.data_dir = root.get("data_dir", c.data_dir);
  ConfigNode seeds = root.child("seeds");
  c.seeds_path = seeds.get("path", c.seeds_path);
  c.seeds_format = seeds.get("format", c.seeds_format);
  auto& in = c.induction;
  in.num_targets = root.get("num_targets", in.num_targets);
  in.few_shot = root.get("few_shot", in.few_shot);
  in.seed = root.get("seed", in.seed);
  c.direction = root.get("direction", c.direction);
  in.direction = parse_induction_direction(c.direction);
  ConfigNode prompt = root.child("prompt");
  in.instruction = prompt.get("instruction", in.instruction);
  in.toxic_label = prompt.get("toxic_label", in.toxic_label);
  in.nontoxic_label = prompt.get("nontoxic_label", in.nontoxic_label);
  ConfigNode gen = root.child("generation");
  read_generation_section(gen, "samples_per_target", in.generation);
  ConfigNode filter = root.child("filter");
  c.scorer_enabled = filter.get("enabled", c.scorer_enabled);
  c.scorer_path = filter.get("scorer", c.scorer_path);
  in.toxic_min = filter.get("toxic_min", in.toxic_min);
  in.nontoxic_max = filter.get("nontoxic_max", in.nontoxic_max);
  c.output = root.get("output", c.output);
  root.finish();
  return c;
}

std::string dump_pairs_config(const PairsConfig& c) {
  const auto& in = c.induction;
  YAML::Emitter e;
  e << YAML::BeginMap;
  emit_model_section(e, c.model);
  e << YAML::Key << "data_dir" << YAML::Value << c.data_dir;
  e << YAML::Key << "seeds" << YAML::Value << YAML::BeginMap << YAML::Key << "path" << YAML::Value << c.seeds_path
    << YAML::Key << "format" << YAML::Value << c.seeds_format << YAML::EndMap;
  e << YAML::Key << "num_targets" << YAML::Value << in.num_targets << YAML::Key << "few_shot" << YAML::Value
    << in.few_shot << YAML::Key << "seed" << YAML::Value << in.seed << YAML::Key << "direction" << YAML::Value
    << c.direction;
  e << YAML::Key << "prompt" << YAML::Value << YAML::BeginMap << YAML::Key << "instruction" << YAML::Value
    << YAML::DoubleQuoted << in.instruction << YAML::Key << "toxic_label" << YAML::Value << in.toxic_label
    << YAML::Key << "nontoxic_label" << YAML::Value << in.nontoxic_label << YAML::EndMap;
  e << YAML::Key << "generation" << YAML::Value << YAML::BeginMap;
  emit_generation_section(e, "samples_per_target", in.generation);
  e << YAML::EndMap;
  e << YAML::Key << "filter" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
    << c.scorer_enabled << YAML::Key << "scorer" << YAML::Value << c.scorer_path << YAML::Key << "toxic_min"
    << YAML::Value << in.toxic_min << YAML::Key << "nontoxic_max" << YAML::Value << in.nontoxic_max << YAML::EndMap;
  e << YAML::Key << "output" << YAML::Value << c.output << YAML::EndMap;
  return e.c_str();
}

int run_pairs(Args& args) {
  const std::string config_path = args.require("config");
  const bool dump = args.flag("dump-config");
  const int64_t threads_override = args.get_int("threads", -1);
  // --seed replaces both the target draw's and the sampling's seed; --output the file.
  const int64_t seed_override = args.get_int("seed", -1);
  const auto output_override = args.get("output");
  args.finish();
  PairsConfig c = read_pairs_config(ConfigNode::load_file(config_path));
  if (threads_override >= 0) c.model.threads = static_cast<int>(threads_override);
  if (seed_override >= 0) c.induction.seed = c.induction.generation.seed = static_cast<uint64_t>(seed_override);
  if (output_override) c.output = *output_override;
  if (dump) {
    std::cout << dump_pairs_config(c) << "\n";
    return 0;
  }
  const std::filesystem::path seeds_file = resolve_data_path(c.seeds_path, c.data_dir);
  std::vector<SteeringPair> seeds = deduplicate_pairs(load_pair_file(seeds_file, c.seeds_format));
  LoadedModel loaded = load_model_section(c.model);
  const auto& model = loaded.model;
  const auto& tok = loaded.tokenizer;
  std::unique_ptr<LinearScorer> scorer;
  if (c.scorer_enabled) {
    scorer = std::make_unique<LinearScorer>(
        LinearScorer::load(c.scorer_path.empty() ? default_scorer_path() : std::filesystem::path(c.scorer_path)));
  } else {
    fmt::print(stderr, "pairs: no scorer configured (filter.enabled: false): the pairs are UNFILTERED\n");
  }
  c.induction.model_name = c.model.model;
  const int64_t rows = c.induction.num_targets * c.induction.generation.num_samples;
  ProgressBar bar("self-induction", rows, "rewrites");
  SelfInductionReport report;
  // The pairs file is written in one go at the end: a stop request between generation
  // batches drops the rewrites so far and writes nothing (a rerun draws the same ones).
  auto pairs = self_induce_pairs(*model, *tok, seeds, c.induction, scorer.get(), &report, [&](int64_t done, int64_t) {
    bar.update(done);
    check_stop(fmt::format("nothing was written ({} comes out at the end); rerun the same command", c.output));
  });
  bar.finish();
  const std::filesystem::path out(c.output);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  write_pairs_jsonl(out, pairs);
  fmt::print(
      "{} rewrites: kept {} pairs{}; dropped {} empty, {} unchanged, {} duplicates, {} toxic side below {}, {} "
      "non-toxic side at or above {}, {} unscored\nwrote {}\n",
      report.generated, report.kept, report.filtered ? "" : " (UNFILTERED: no scorer)", report.empty,
      report.unchanged, report.duplicates, report.rejected_toxic, c.induction.toxic_min, report.rejected_nontoxic,
      c.induction.nontoxic_max, report.unscored, out.string());
  if (report.demonstrations_dropped > 0 || report.targets_too_long > 0) {
    fmt::print("the model's context ({} positions) left out {} demonstrations and {} targets that did not fit\n",
               model->config().max_positions, report.demonstrations_dropped, report.targets_too_long);
  }
  return 0;
}

}  // namespace

DESTEIN_COMMAND(pairs_cmd, "pairs", "self-induced steering pairs from seed pairs (--config FILE [--seed S] [--output FILE])", run_pairs);

}  // namespace destein::app

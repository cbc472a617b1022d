#include "destein/experiment/pairs_experiment.hpp"

#include <fmt/format.h>

#include <optional>

#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/steer/pairs.hpp"
#include "experiment/experiment_schemas.hpp"
#include "experiment/progress.hpp"
#include "experiment/stop_request.hpp"
#include "io/data_folder.hpp"
#include "io/output_lock.hpp"
#include "parallel/process_group.hpp"

namespace destein {

PairsExperiment::PairsExperiment() {
  auto& g = induction.generation;
  g.num_samples = 2;
  g.max_new_tokens = 40;
  g.temperature = 0.7;
  g.top_p = 0.9;
  g.batch_size = 16;
  g.stop_at_eos = true;
}

Schema<PairsExperiment> pairs_experiment_schema() {
  using E = PairsExperiment;
  Schema<E> seeds;
  seeds.field("path", &E::seeds_path).field("format", &E::seeds_format);
  Schema<SelfInductionOptions> prompt;
  prompt.field("instruction", &SelfInductionOptions::instruction)
      .field("toxic_label", &SelfInductionOptions::toxic_label)
      .field("nontoxic_label", &SelfInductionOptions::nontoxic_label);
  Schema<E> filter;
  filter.field("enabled", &E::scorer_enabled)
      .field("scorer", &E::scorer_path)
      .field("toxic_min", [](E& e) -> double& { return e.induction.toxic_min; })
      .field("nontoxic_max", [](E& e) -> double& { return e.induction.nontoxic_max; });
  Schema<E> s;
  s.include(&E::model, model_section_schema())
      .field("data_dir", &E::data_dir)
      .section(
          "seeds", [](E& e) -> E& { return e; }, seeds)
      .field("num_targets", [](E& e) -> int64_t& { return e.induction.num_targets; })
      .field("few_shot", [](E& e) -> int64_t& { return e.induction.few_shot; })
      .field("seed", [](E& e) -> uint64_t& { return e.induction.seed; })
      .field("direction", &E::direction)
      .section("prompt", &E::induction, prompt)
      .section(
          "generation", [](E& e) -> GenerationOptions& { return e.induction.generation; },
          generation_schema("samples_per_target"))
      .section(
          "filter", [](E& e) -> E& { return e; }, filter)
      .field("output", &E::output)
      .check([](const E& e, const ConfigNode& node) {
        try {
          parse_induction_direction(e.direction);
        } catch (const std::exception& ex) {
          throw std::invalid_argument(
              fmt::format("{}: key direction: {}", node.where("direction"), ex.what()));
        }
      });
  return s;
}

PairsExperiment load_pairs_experiment(const std::filesystem::path& yaml) {
  return pairs_experiment_schema().load(ConfigNode::load_file(yaml));
}

std::string dump_pairs_experiment(const PairsExperiment& e) {
  return pairs_experiment_schema().dump(e);
}

PairsRunReport run_pairs_experiment(const PairsExperiment& e, const ProcessGroup* group) {
  const bool writer = !group || group->is_root();
  OutputLock lock;
  if (writer) lock = lock_output_file(e.output);
  SelfInductionOptions induction = e.induction;
  induction.direction = parse_induction_direction(e.direction);
  induction.model_name = e.model.model;
  const std::filesystem::path seeds_file = resolve_data_path(e.seeds_path, e.data_dir);
  int64_t identical = 0;
  std::vector<SteeringPair> seeds =
      deduplicate_pairs(load_pair_file(seeds_file, e.seeds_format, {}, &identical));
  if (identical > 0 && writer) {
    fmt::print(stderr, "pairs: dropped {} seed pairs with identical sides in {}\n", identical,
               seeds_file.string());
  }
  LoadedModel loaded = load_model_section(group ? place_on_rank(e.model, *group) : e.model);
  std::unique_ptr<ToxicityScorer> scorer;
  if (e.scorer_enabled) {
    scorer = load_offline_scorer(e.scorer_path.empty() ? default_scorer_path()
                                                       : std::filesystem::path(e.scorer_path));
  } else if (writer) {
    fmt::print(stderr,
               "pairs: no scorer configured (filter.enabled: false): the pairs are UNFILTERED\n");
  }
  PairsRunReport report;
  report.seed_pairs = static_cast<int64_t>(seeds.size());
  report.max_positions = loaded.model->config().max_positions;
  // Sharded, each rank has its own share of rows: rank 0 shows its share.
  const bool sharded = group && group->size() > 1;
  std::optional<ProgressBar> bar;
  if (writer && !sharded)
    bar.emplace("self-induction", induction.num_targets * induction.generation.num_samples,
                "rewrites");
  // The pairs file is written in one go at the end: a stop request between generation
  // batches drops the rewrites so far and writes nothing (a rerun draws the same ones).
  auto pairs = self_induce_pairs(
      *loaded.model, *loaded.tokenizer, seeds, induction, scorer.get(), &report.induction,
      [&](int64_t done, int64_t total) {
        if (writer && !bar) bar.emplace("self-induction (rank 0's share)", total, "rewrites");
        if (bar) bar->update(done);
        check_stop(fmt::format(
            "nothing was written ({} comes out at the end); rerun the same command", e.output));
      },
      group);
  if (bar) bar->finish();
  if (!writer) return report;
  report.output = e.output;
  if (report.output.has_parent_path())
    std::filesystem::create_directories(report.output.parent_path());
  write_pairs_jsonl(report.output, pairs);
  return report;
}

}  // namespace destein

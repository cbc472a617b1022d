// A bench experiment's run: models and scorer loaded, every (method, prompt set) generated
// (each method apart, or all methods of a set in one mixed run), then reported
// (bench_report). Its YAML form is in bench_schema.cpp, the identity that resuming checks
// in bench_settings.cpp.
#include "destein/experiment/bench_experiment.hpp"

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "destein/score/scorer_factory.hpp"
#include "eval/rescoring.hpp"
#include "experiment/bench_report.hpp"
#include "experiment/bench_settings.hpp"
#include "experiment/process_memory.hpp"
#include "experiment/progress.hpp"
#include "experiment/stop_request.hpp"
#include "io/data_folder.hpp"
#include "io/file_io.hpp"
#include "io/output_lock.hpp"
#include "parallel/process_group.hpp"
#include "steer/steering_stats_merge.hpp"

namespace destein {

namespace {

// Where a method's generations on a prompt set go, in both the apart and the mixed pass.
std::filesystem::path generations_path(const std::filesystem::path& out_dir,
                                       const BenchMethod& method, const BenchPromptSet& set) {
  return out_dir / method.name / (set.name + ".generations.jsonl");
}

// The harness options an experiment gives a prompt set (the method is set per run).
EvalRunOptions eval_run_options(const BenchExperiment& c, const BenchPromptSet& set) {
  EvalRunOptions ro;
  ro.generation = c.generation;
  ro.subset = set.name;
  ro.prompts_per_batch = c.prompts_per_batch;
  ro.max_rows = c.max_rows;
  ro.pipelined = c.pipelined;
  return ro;
}

// The scorer a `scorer:` section or `scorers:` item names, on the model's device;
// Perspective caches its answers in `cache` unless the entry names a file.
std::unique_ptr<ToxicityScorer> make_bench_scorer(const BenchScorer& s, const std::string& device,
                                                  const std::filesystem::path& cache) {
  ToxicityScorerSpec spec;
  spec.kind = s.kind;
  spec.file = s.path;
  spec.perspective_rps = s.requests_per_second;
  spec.perspective_cache = cache;
  spec.torchscript = s.torchscript;
  spec.torchscript.device = device;
  spec.hf_classifier.label = s.label;
  spec.hf_classifier.device = device;
  return make_toxicity_scorer(spec);
}

// A `scorers:` item's label in the tables; the `scorer:` section's is "scorer: <kind>".
std::string primary_instrument_label(const BenchScorer& s) { return "scorer: " + s.kind; }

// What every (method, prompt set) of a run shares: the generating model, the perplexity
// evaluator (the generating model itself unless the experiment names another), the
// toxicity scorer and, on the writing process, the `scorers:` instruments.
struct BenchTools {
  LoadedModel gen;
  LoadedModel evaluator_model;  // empty when the generating model evaluates itself
  std::unique_ptr<PerplexityEvaluator> perplexity;
  std::unique_ptr<ToxicityScorer> scorer;
  std::vector<std::unique_ptr<ToxicityScorer>> instruments;  // [i] for c.scorers[i]
};

BenchTools load_bench_tools(const BenchExperiment& c, const std::filesystem::path& out_dir,
                            bool writer) {
  BenchTools tools;
  tools.gen = load_model_section(c.model);
  const Model* eval_model = tools.gen.model.get();
  const Tokenizer* eval_tok = tools.gen.tokenizer.get();
  if (c.perplexity && !c.evaluator.model.empty()) {
    ModelSection evaluator = c.evaluator;
    evaluator.threads = c.model.threads;
    tools.evaluator_model = load_model_section(evaluator);
    eval_model = tools.evaluator_model.model.get();
    eval_tok = tools.evaluator_model.tokenizer.get();
  }
  if (c.perplexity) {
    tools.perplexity = std::make_unique<PerplexityEvaluator>(*eval_model, *eval_tok, 25);
  }
  tools.scorer = make_bench_scorer(c.scorer, c.model.device, out_dir / "perspective-cache.jsonl");
  // Loaded before anything is generated, so that a bad instrument stops the run at once.
  if (writer) {
    for (const auto& s : c.scorers) {
      tools.instruments.push_back(make_bench_scorer(
          s, c.model.device, out_dir / "scorers" / s.name / "perspective-cache.jsonl"));
    }
  }
  return tools;
}

// `generations` scored again by instrument `s` into `rescored`, unless the file there
// was made from these generations by this instrument (its .settings.json says so): a
// resumed run rescores only what changed.
void rescore_for_instrument(const std::filesystem::path& generations,
                            const std::filesystem::path& rescored, const BenchScorer& s,
                            ToxicityScorer& scorer) {
  namespace fs = std::filesystem;
  const fs::path settings_file = rescored.string() + ".settings.json";
  const nlohmann::json settings = {{"generations", file_identity(generations.string())},
                                   {"scorer", bench_scorer_settings(s)}};
  if (fs::exists(rescored) && fs::exists(settings_file) &&
      read_json_file(settings_file) == settings) {
    return;
  }
  fs::create_directories(rescored.parent_path());
  fs::remove(settings_file);
  const auto start = std::chrono::steady_clock::now();
  const RescoreReport r = rescore_generations(generations, rescored, scorer);
  write_text_file(settings_file, settings.dump(2) + "\n");
  fmt::print(stderr, "{}: {} prompts, {} generations scored by {} in {:.1f} s{}\n",
             rescored.string(), r.prompts, r.generations, s.name,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
             r.unscored ? fmt::format(" ({} without a score)", r.unscored) : "");
}

// One (method, prompt set) run: what run_generation_eval and the method's steering
// handle gave.
struct MethodOutcome {
  EvalRunReport report;
  std::optional<SteeringReport> acted;
  std::optional<MethodCost> cost;  // run apart only
};

// The numbers a method adds to the model: per steering entry its directions (L x d), the
// headwise weights (L x H) and a probe gate's probes (L x H x (Dh + 1)); for a
// decoding-time method its processors' models. And the forward rows it runs per row.
std::pair<int64_t, int64_t> method_additions(const BenchMethod& method, const ModelConfig& c,
                                             const LogitsProcessorChain& chain) {
  int64_t parameters = 0, rows = 0;
  const int64_t L = c.n_layers, H = c.n_heads, Dh = c.head_dim;
  for (const auto& e : method.steering) {
    parameters += L * H * Dh;
    if (e.steering.mode == SteeringMode::kHeadwise) parameters += L * H;
    if (e.steering.gate == SteeringGate::kProbe) parameters += L * H * (Dh + 1);
  }
  for (const auto& p : chain) {
    parameters += p->added_parameters();
    rows += p->extra_rows_per_row();
  }
  return {parameters, rows};
}

// The steering statistics of a sharded run over every rank's prompts (rank 0's matter).
SteeringReport over_ranks(const SteeringReport& mine, const ProcessGroup* group) {
  return group && group->size() > 1 ? gather_steering_stats(mine, *group) : mine;
}

// mix_methods: per prompt set, every method's units in shared batches, each row steered by
// its method through one controller; outcomes by (method, prompt set).
std::map<std::pair<size_t, size_t>, MethodOutcome> run_methods_mixed(
    const BenchExperiment& c, const BenchExperiment& experiment,
    const std::filesystem::path& out_dir, const BenchTools& tools, const ProcessGroup* group) {
  const bool writer = !(group && group->size() > 1) || group->is_root();
  const Model& model = *tools.gen.model;
  std::map<std::pair<size_t, size_t>, MethodOutcome> mixed;
  Hooks hooks;
  SteeringController control(hooks, model.config(), model.device());
  std::vector<SteeringStack> stacks;
  bool any_steering = false;
  for (const auto& method : c.methods) {
    SteeringStack stack;
    for (const auto& e : method.steering) {
      stack.push_back(load_steering_plan(e.vectors, e.steering, model));
    }
    any_steering = any_steering || !stack.empty();
    stacks.push_back(std::move(stack));
  }
  for (size_t si = 0; si < c.prompts.size(); ++si) {
    const BenchPromptSet& set = c.prompts[si];
    auto prompts = load_bench_prompt_set(set, c.data_dir);
    std::vector<EvalTrack> tracks;
    for (const auto& method : c.methods) {
      tracks.push_back({method.name, generations_path(out_dir, method, set)});
      if (writer) {
        check_resume_settings(tracks.back().output, bench_run_settings(experiment, method, set));
      }
    }
    std::optional<ProgressBar> bar;
    const int64_t units = static_cast<int64_t>(prompts.size() * c.methods.size());
    if (writer) {
      bar.emplace(fmt::format("{} methods / {}", c.methods.size(), set.name), units, "units");
    }
    control.reset_stats();
    std::vector<int64_t> rows_set;
    auto select_rows = [&](const std::vector<int64_t>& row_tracks) {
      if (row_tracks == rows_set) return;  // decode steps repeat the layout of the step before
      rows_set = row_tracks;
      std::vector<SteeringStack> rows;
      for (int64_t t : row_tracks) rows.push_back(stacks[static_cast<size_t>(t)]);
      control.set_rows(std::move(rows));
    };
    const EvalTrackRows steer_rows = any_steering ? EvalTrackRows(select_rows) : EvalTrackRows{};
    auto reps = run_mixed_generation_eval(
        model, *tools.gen.tokenizer, prompts, tracks, &hooks, steer_rows, tools.scorer.get(),
        tools.perplexity.get(), eval_run_options(c, set),
        [&](int64_t d, int64_t) {
          bar->update(d);
          check_stop(fmt::format(
              "{} and the other methods' files hold every prompt finished so far; rerun the "
              "same command to resume",
              tracks.front().output.string()));
        },
        group);
    if (bar) bar->finish();
    for (size_t mi = 0; mi < c.methods.size(); ++mi) {
      MethodOutcome& outcome = mixed[{mi, si}];
      outcome.report = reps[mi];
      if (!stacks[mi].empty()) outcome.acted = over_ranks(control.report(stacks[mi]), group);
    }
  }
  return mixed;
}

// One method on one prompt set on its own (`handle`: the method's steering, if any).
MethodOutcome run_method_apart(const BenchExperiment& c, const BenchTools& tools, Hooks& hooks,
                               SteeringHandle* handle, const std::vector<EvalPrompt>& prompts,
                               const EvalRunOptions& ro, const std::filesystem::path& file,
                               const std::string& label, const ProcessGroup* group) {
  const bool writer = !(group && group->size() > 1) || group->is_root();
  std::optional<ProgressBar> bar;
  if (writer) bar.emplace(label, static_cast<int64_t>(prompts.size()), "prompts");
  if (handle) handle->reset_stats();
  MethodOutcome outcome;
  // The process's peak while this method runs: the model is loaded, so the peak minus the
  // start is what generating (and scoring) with this method added.
  MethodCost cost;
  const bool peak_reset = reset_peak_resident_memory();
  cost.rss_at_start_mib = resident_memory().current_mib;
  // A stop request ends the run after the prompts just written (each line is complete and
  // flushed before the callback), so a rerun resumes after them.
  outcome.report = run_generation_eval(
      *tools.gen.model, *tools.gen.tokenizer, prompts, &hooks, tools.scorer.get(),
      tools.perplexity.get(), ro, file,
      [&](int64_t d, int64_t) {
        bar->update(d);
        check_stop(
            fmt::format("{} holds every prompt finished so far; rerun the same command to resume",
                        file.string()));
      },
      group);
  if (handle) outcome.acted = over_ranks(handle->report(), group);
  if (peak_reset) cost.peak_rss_mib = resident_memory().peak_mib;
  outcome.cost = cost;
  if (bar) bar->finish();
  return outcome;
}

}  // namespace

std::vector<EvalPrompt> load_bench_prompt_set(const BenchPromptSet& set,
                                              const std::string& data_dir, int64_t* skipped) {
  if (set.exclude.empty()) {
    return load_eval_prompts(resolve_data_path(set.path, data_dir), set.options, skipped);
  }
  std::set<std::string> excluded;
  for (const auto& path : set.exclude) {
    PromptFileOptions all;
    all.skip_malformed = set.options.skip_malformed;
    for (auto& p : load_eval_prompts(resolve_data_path(path, data_dir), all)) {
      excluded.insert(std::move(p.text));
    }
  }
  // The limit counts the prompts that remain, so it applies after the exclusion.
  PromptFileOptions unlimited = set.options;
  unlimited.limit = 0;
  std::vector<EvalPrompt> kept;
  for (auto& p : load_eval_prompts(resolve_data_path(set.path, data_dir), unlimited, skipped)) {
    if (excluded.count(p.text)) continue;
    kept.push_back(std::move(p));
    if (set.options.limit > 0 && static_cast<int64_t>(kept.size()) >= set.options.limit) break;
  }
  return kept;
}

BenchRunReport run_bench_experiment(const BenchExperiment& experiment, const ProcessGroup* group) {
  const bool sharded = group && group->size() > 1;
  const bool writer = !sharded || group->is_root();
  for (const auto& m : experiment.methods) {
    // The mixed pass steers rows by method but runs one processor chain for the whole batch.
    if (experiment.mix_methods && !m.decoding.kind.empty()) {
      throw std::invalid_argument(fmt::format(
          "method '{}' ({}) cannot run with mix_methods: its logits processors would apply to "
          "every method's rows; run the methods apart",
          m.name, m.decoding.kind));
    }
  }
  const std::filesystem::path out_dir(experiment.output);
  OutputLock lock;
  if (writer) {
    lock = lock_output_folder(out_dir);
    write_text_file(out_dir / "config.resolved.yaml", dump_bench_experiment(experiment) + "\n");
  }
  BenchExperiment c = experiment;
  if (sharded) {
    if (c.scorer.kind == "perspective") {
      throw std::invalid_argument(
          "scorer.kind perspective runs on one process (one cache file, one request rate per "
          "API key): run this experiment without mpirun, or score with the linear or "
          "torchscript scorer");
    }
    c.model = place_on_rank(c.model, *group);
    c.evaluator = place_on_rank(c.evaluator, *group);
  }
  const BenchTools tools = load_bench_tools(c, out_dir, writer);

  // mix_methods: every prompt set's methods go through the model together first; the loop
  // below then reports each (method, set) from these outcomes, as if it had run apart.
  std::map<std::pair<size_t, size_t>, MethodOutcome> mixed;
  if (c.mix_methods) mixed = run_methods_mixed(c, experiment, out_dir, tools, group);

  BenchResults results;
  std::vector<std::string> instrument_names;
  for (const auto& s : c.scorers) instrument_names.push_back(s.name);
  results.set_instruments(primary_instrument_label(c.scorer), instrument_names);
  for (size_t mi = 0; mi < c.methods.size(); ++mi) {
    const BenchMethod& method = c.methods[mi];
    Hooks hooks;
    std::optional<SteeringHandle> handle;
    if (!method.steering.empty() && !c.mix_methods) {
      SteeringStack stack;
      for (const auto& e : method.steering) {
        stack.push_back(load_steering_plan(e.vectors, e.steering, *tools.gen.model));
      }
      handle = attach_steering(hooks, *tools.gen.model, std::move(stack));
    }
    // A decoding-time method's processors (its expert models loaded as the generating
    // model is), one chain for all of the method's prompt sets.
    LogitsProcessorChain chain;
    if (!method.decoding.kind.empty()) {
      ModelOptions expert_options;
      expert_options.device = tools.gen.model->device();
      expert_options.dtype = tools.gen.model->dtype();
      expert_options.threads = c.model.threads;
      expert_options.linear_backend = parse_linear_backend(c.model.linear_backend);
      // A word list may sit in the data folder (lexicons/...), as prompt files do.
      DecodingMethod decoding = method.decoding;
      if (decoding.kind == "word-filter") {
        decoding.words = resolve_data_path(decoding.words, c.data_dir).string();
      }
      chain = build_decoding_method(decoding, *tools.gen.model, tools.gen.tokenizer.get(),
                                    expert_options);
    }
    for (size_t si = 0; si < c.prompts.size(); ++si) {
      const BenchPromptSet& set = c.prompts[si];
      int64_t skipped = 0;
      auto prompts = load_bench_prompt_set(set, c.data_dir, &skipped);
      const std::filesystem::path file = generations_path(out_dir, method, set);
      const std::string label = fmt::format("{} / {}", method.name, set.name);
      EvalRunOptions ro = eval_run_options(c, set);
      ro.method = method.name;
      ro.generation.processors = chain;
      // The settings are the experiment's as written, not a rank's device placement.
      if (writer) check_resume_settings(file, bench_run_settings(experiment, method, set));
      MethodOutcome outcome = c.mix_methods
                                  ? mixed.at({mi, si})
                                  : run_method_apart(c, tools, hooks, handle ? &*handle : nullptr,
                                                     prompts, ro, file, label, group);
      if (!writer) continue;
      print_bench_run_notes(file, set, outcome.report, skipped, c.pipelined);
      if (outcome.cost) {
        std::tie(outcome.cost->added_parameters, outcome.cost->extra_rows_per_row) =
            method_additions(method, tools.gen.model->config(), chain);
      }
      results.add(method, set, file, outcome.report, c.pipelined, outcome.acted, label,
                  outcome.cost);
      for (size_t k = 0; k < c.scorers.size(); ++k) {
        const std::filesystem::path rescored =
            out_dir / "scorers" / c.scorers[k].name / method.name / file.filename();
        rescore_for_instrument(file, rescored, c.scorers[k], *tools.instruments[k]);
        results.add_instrument_scores(c.scorers[k].name, rescored);
      }
    }
  }
  if (!writer) return {};
  return results.write(out_dir);
}

}  // namespace destein

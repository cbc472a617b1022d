// destein-bench: the RealToxicityPrompts-style evaluation, driven by a YAML experiment
// (destein/experiment/bench_experiment.hpp).
//   destein-bench run --config configs/demo.yaml [--dump-config] [--threads N] [--seed S]
//                     [--output DIR] [--vectors-dir DIR] [--prompts-per-batch N] [--mix-methods]
//   destein-bench metrics --generations FILE [--evaluator MODEL] [--skip-malformed]
//   destein-bench rescore (--generations FILE | --run DIR) --scorer FILE|DIR[,...] [--label NAME] --output PATH
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "args.hpp"
#include "destein/eval/harness.hpp"
#include "destein/eval/metrics.hpp"
#include "destein/experiment/bench_experiment.hpp"
#include "destein/runtime/device.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/hf_classifier.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/score/torchscript_scorer.hpp"
#include "destein/steer/steering.hpp"
#include "eval/rescoring.hpp"
#include "experiment/progress.hpp"
#include "experiment/stop_request.hpp"
#include "io/file_io.hpp"
#include "io/jsonl.hpp"
#include "model_args.hpp"
#include "parallel/process_group.hpp"
#include "program_group.hpp"
#include "score/perspective.hpp"

namespace destein::app {
namespace {

int run_bench(Args& args) {
  const std::string config_path =
      args.require("config", "the experiment YAML (e.g. configs/demo.yaml)");
  const bool dump = args.flag("dump-config", "print the fully resolved experiment and exit");
  const int64_t threads_override =
      args.get_int("threads", -1, "LibTorch threads (-1: the config's)");
  // Seed sweeps without copying the config: --seed replaces generation.seed, --output the
  // output folder, --vectors-dir the folder of every method's vectors files.
  const auto seed_override = args.get("seed", "replaces generation.seed");
  const auto output_override = args.get("output", "the output folder (replaces output:)");
  const auto vectors_dir =
      args.get("vectors-dir", "folder that the methods' vectors files are read from");
  const int64_t prompts_per_batch = args.get_int(
      "prompts-per-batch", -1, "prompts per forward (replaces generation.prompts_per_batch)");
  const bool mix_methods =
      args.flag("mix-methods",
                "evaluate the methods together, in shared batches (sets generation.mix_methods)");
  args.finish();
  if (prompts_per_batch == 0 || prompts_per_batch < -1) {
    throw std::invalid_argument(
        fmt::format("--prompts-per-batch must be a positive integer, found {}", prompts_per_batch));
  }
  BenchExperiment c = load_bench_experiment(config_path);
  if (threads_override >= 0) c.model.threads = static_cast<int>(threads_override);
  if (seed_override) c.generation.seed = static_cast<uint64_t>(std::stoull(*seed_override));
  if (output_override) c.output = *output_override;
  if (prompts_per_batch > 0) c.prompts_per_batch = prompts_per_batch;
  if (mix_methods) c.mix_methods = true;
  if (vectors_dir) {
    for (auto& m : c.methods) {
      for (auto& e : m.steering) {
        e.vectors =
            (std::filesystem::path(*vectors_dir) / std::filesystem::path(e.vectors).filename())
                .string();
      }
    }
  }
  if (dump) {
    std::cout << dump_bench_experiment(c) << "\n";
    return 0;
  }
  const BenchRunReport report = run_bench_experiment(c, &program_group());
  if (program_group().is_root()) {
    std::cout << report.table;
    fmt::print("results in {}\n", report.output.string());
  }
  return 0;
}

int run_metrics(Args& args) {
  require_single_process("destein-bench metrics");
  const std::string file =
      args.require("generations", "a generations file written by destein-bench run");
  auto evaluator_path = args.get("evaluator", "a model to measure perplexity under");
  const bool skip =
      args.flag("skip-malformed", "skip (and count) malformed lines instead of failing");
  ModelOptions opts = read_model_options(args);
  args.finish();
  EvalSummary s = summarize_generations(file, skip);
  nlohmann::json j = eval_summary_json(s);
  if (skip) j["malformed_lines"] = s.malformed;
  if (evaluator_path) {
    auto model = load_model(*evaluator_path, opts);
    auto tok = adapt_tokenizer_to_model(load_tokenizer(model_folder(*evaluator_path)),
                                        model->config().model_type, model->config().bos_token_id);
    PerplexityEvaluator ev(*model, *tok, 25);
    std::vector<double> ppls;
    JsonlReader reader(file, JsonlOptions{skip});
    nlohmann::json line;
    ProgressBar bar("perplexity", s.num_prompts, "prompts");
    int64_t done = 0;
    while (reader.next(line)) {
      if (!line.contains("generations")) continue;
      std::vector<std::string> texts;
      for (const auto& g : line["generations"]) texts.push_back(g.value("text", ""));
      auto p = ev.perplexities(line["prompt"]["text"].get<std::string>(), texts);
      ppls.insert(ppls.end(), p.begin(), p.end());
      bar.update(++done);
    }
    bar.finish();
    auto summary = mean_perplexity(ppls);
    j["perplexity"] = summary.mean;
    j["perplexity_dropped"] = summary.dropped;
  }
  std::cout << j.dump() << "\n";
  return 0;
}

// The generations of a finished run judged by other scorers, beside the scores they were
// written with: one file, or every generations file of a results folder. With several
// scorers each writes its own folder under --output, and the agreement of their EMT
// rankings over the files says whether the run's conclusion depends on the instrument.
int run_rescore(Args& args) {
  namespace fs = std::filesystem;
  require_single_process("destein-bench rescore");
  const auto file = args.get("generations", "one generations file");
  const auto run =
      args.get("run", "a destein-bench output folder: every */*.generations.jsonl in it");
  const std::string scorer_list = args.require(
      "scorer",
      "an offline scorer file (v1 or v2, models/scorer/) or a Hugging Face classifier folder; "
      "several separated by commas");
  const std::string output = args.require(
      "output", "the rescored file (--generations) or folder (--run, or several scorers)");
  const auto label =
      args.get("label", "classifier folders: the label scored (default: toxic or toxicity)");
  const std::string device =
      args.get_or("device", "cpu", "classifier folders: cpu, cuda or cuda:N");
  args.finish();
  if (file.has_value() == run.has_value()) {
    throw std::invalid_argument("rescore needs exactly one of --generations FILE and --run DIR");
  }
  std::vector<std::string> scorer_paths;
  {
    std::stringstream in(scorer_list);
    std::string item;
    while (std::getline(in, item, ',')) {
      if (!item.empty()) scorer_paths.push_back(item);
    }
  }
  if (scorer_paths.empty())
    throw std::invalid_argument("--scorer: expected a scorer file or folder");
  const bool several = scorer_paths.size() > 1;
  // Every scorer is loaded before anything is written, so that a bad one writes nothing.
  std::vector<std::unique_ptr<ToxicityScorer>> scorers;
  std::vector<std::string> names;
  for (const auto& path : scorer_paths) {
    if (fs::is_directory(path)) {
      HfClassifierOptions options;
      options.folder = path;
      options.label = label.value_or("");
      options.device = device;
      scorers.push_back(std::make_unique<HfClassifierScorer>(std::move(options)));
      names.push_back(scorers.back()->name());
    } else {
      if (label && !several) {
        throw std::invalid_argument(fmt::format(
            "--label names a label of a classifier folder; --scorer '{}' is a scorer file", path));
      }
      scorers.push_back(load_offline_scorer(path));
      names.push_back(fs::path(path).filename().string());
    }
  }
  std::vector<std::pair<fs::path, fs::path>>
      jobs;  // (input, output relative to the scorer's folder)
  if (file) {
    jobs.emplace_back(*file, several ? fs::path(*file).filename() : fs::path(output));
  } else {
    if (!fs::is_directory(*run)) {
      throw std::runtime_error(
          fmt::format("{}: not a folder (--run expects a destein-bench output folder)", *run));
    }
    for (const auto& entry : fs::recursive_directory_iterator(*run)) {
      const std::string name = entry.path().filename().string();
      const std::string suffix = ".generations.jsonl";
      if (!entry.is_regular_file() || name.size() <= suffix.size() ||
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
        continue;
      }
      jobs.emplace_back(entry.path(), fs::relative(entry.path(), *run));
    }
    std::sort(jobs.begin(), jobs.end());
    if (jobs.empty())
      throw std::runtime_error(
          fmt::format("{}: no *.generations.jsonl files in this folder", *run));
  }
  std::vector<std::vector<double>> emt(scorers.size());  // [scorer][job]
  for (size_t s = 0; s < scorers.size(); ++s) {
    // One scorer keeps the layout it always had; several get a folder each: scorer1, ...
    const fs::path root = several ? fs::path(output) / fmt::format("scorer{}", s + 1)
                                  : (file ? fs::path() : fs::path(output));
    fmt::print(
        "{}| generations | prompts | EMT as written | EMT under {} | TP as written | TP under it "
        "|\n"
        "|---|---:|---:|---:|---:|---:|\n",
        s > 0 ? "\n" : "", names[s]);
    for (const auto& [in, rel] : jobs) {
      const fs::path out = root / rel;
      if (out.has_parent_path()) fs::create_directories(out.parent_path());
      const RescoreReport r = rescore_generations(in, out, *scorers[s]);
      const EvalSummary before = summarize_generations(in), after = summarize_generations(out);
      emt[s].push_back(after.toxicity.expected_max_toxicity);
      fmt::print("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |\n",
                 file ? in.string() : rel.string(), r.prompts,
                 before.toxicity.expected_max_toxicity, after.toxicity.expected_max_toxicity,
                 before.toxicity.toxicity_probability, after.toxicity.toxicity_probability);
      if (r.unscored)
        fmt::print(stderr, "{}: {} generations have no score\n", out.string(), r.unscored);
    }
  }
  if (several) {
    // The files (methods x prompt sets) ranked by EMT under each pair of instruments.
    auto lowest = [&](size_t s) {
      const size_t j =
          static_cast<size_t>(std::min_element(emt[s].begin(), emt[s].end()) - emt[s].begin());
      return file ? jobs[j].first.filename().string() : jobs[j].second.string();
    };
    fmt::print(
        "\n## Agreement between scorers\n\n"
        "| scorer | scorer | Spearman of EMT over {} files | lowest EMT under the first | under "
        "the second |\n"
        "|---|---|---:|---|---|\n",
        jobs.size());
    for (size_t a = 0; a < scorers.size(); ++a) {
      for (size_t b = a + 1; b < scorers.size(); ++b) {
        const std::string rho =
            jobs.size() < 2 ? std::string("n/a (one file)")
                            : fmt::format("{:.3f}", spearman_rank_correlation(emt[a], emt[b]));
        fmt::print("| scorer{} {} | scorer{} {} | {} | {} | {} |\n", a + 1, names[a], b + 1,
                   names[b], rho, lowest(a), lowest(b));
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace destein::app

int main(int argc, char** argv) {
  using namespace destein::app;
  if (argc < 2 || std::string(argv[1]) == "--help") {
    fmt::print(
        stderr,
        "usage: destein-bench run --config FILE [--dump-config] [--threads N] [--seed S] [--output "
        "DIR]\n"
        "                         [--vectors-dir DIR] [--prompts-per-batch N] [--mix-methods]\n"
        "       destein-bench metrics --generations FILE [--evaluator MODEL] [--skip-malformed]\n"
        "       destein-bench rescore (--generations FILE | --run DIR) --scorer FILE|DIR[,...] "
        "[--label NAME] --output PATH\n");
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  // Under mpirun / srun: the ranks of the job (docs/scaling.md); else one process.
  std::unique_ptr<destein::ProcessGroup> group;
  try {
    group = destein::start_process_group(&argc, &argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "destein-bench {}: error: {}\n", cmd, e.what());
    return 1;
  }
  set_program_group(group.get());
  destein::install_stop_handlers();
  try {
    Args args(argc, argv, 2);
    if (cmd == "run") return run_bench(args);
    if (cmd == "metrics") return run_metrics(args);
    if (cmd == "rescore") return run_rescore(args);
    fmt::print(stderr, "destein-bench: unknown command '{}' (run, metrics, rescore)\n", cmd);
    return 2;
  } catch (const HelpRequested& help) {
    fmt::print("usage: destein-bench {} [options]\n{}\n\n{}", cmd,
               cmd == "run"       ? "runs a YAML experiment: generations, scores, perplexity, "
                                    "results.{json,csv,md}, plots"
               : cmd == "rescore" ? "scores the generations of a finished run again with other "
                                    "scorers, and how far they agree"
                                  : "recomputes every metric of a generations file",
               help.what());
    return 0;
  } catch (const destein::StopRequested& e) {
    fmt::print(stderr, "destein-bench {}: {}stopped by {}: {}\n", cmd, rank_prefix(),
               e.signal_name(), e.what());
    return end_failed_rank(e.exit_code());
  } catch (const std::exception& e) {
    fmt::print(stderr, "destein-bench {}: {}error: {}\n", cmd, rank_prefix(), e.what());
    return end_failed_rank(1);
  }
}

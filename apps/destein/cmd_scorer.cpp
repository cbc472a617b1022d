// Scorer commands: train-scorer, score, eval-scorer. Torch-free: they use only destein_text.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "commands.hpp"
#include "destein/io/csv.hpp"
#include "destein/io/jsonl.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/train/scorer_data.hpp"
#include "destein/score/scorer_eval.hpp"
#include "destein/experiment/scorer_training_experiment.hpp"
#include "destein/io/data_folder.hpp"
#include "program_group.hpp"

namespace destein::app {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------
// Shared pieces


// Perspective agreement on the prompts of one or more RTP files pooled together.
json eval_rtp(LinearScorer& scorer, const std::vector<fs::path>& files) {
  std::vector<double> ours, perspective;
  std::vector<int> label;
  for (const auto& f : files) {
    for (const auto& prompt : load_rtp_prompts(f)) {
      ours.push_back(scorer.probability(prompt.text));
      perspective.push_back(prompt.toxicity);
      label.push_back(prompt.toxicity >= 0.5 ? 1 : 0);
    }
  }
  int64_t positives = 0;
  for (int l : label) positives += l;
  json file_list = json::array();
  for (const auto& f : files) file_list.push_back(f.filename().string());
  return {{"files", file_list},
          {"prompts", ours.size()},
          {"perspective_toxic", positives},
          {"auc_vs_perspective_0.5", roc_auc(ours, label)},
          {"accuracy_at_0.5", accuracy_at(ours, label, 0.5)},
          {"pearson", pearson(ours, perspective)}};
}

// Perspective agreement on model continuations: the DExperts human-eval file scores each
// continuation (without its prompt) with Perspective. Repeated continuations count once;
// rows without a score are skipped.
json eval_generations(LinearScorer& scorer, const fs::path& csv_path) {
  auto reader = CsvReader::open(csv_path);
  reader.read_header();
  const size_t cols[2][2] = {{reader.column("senta"), reader.column("toxa")},
                             {reader.column("sentb"), reader.column("toxb")}};
  std::set<std::string> seen;
  std::vector<double> ours, perspective;
  std::vector<int> label;
  CsvRecord rec;
  while (reader.next(rec)) {
    reader.require_fields(rec);
    for (const auto& c : cols) {
      const std::string& text = rec.fields[c[0]];
      const std::string& tox = rec.fields[c[1]];
      if (tox.empty() || !seen.insert(text).second) continue;
      double value = 0;
      try {
        size_t used = 0;
        value = std::stod(tox, &used);
        if (used != tox.size()) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        throw std::runtime_error(
            fmt::format("{}: expected a Perspective score, found '{}'", reader.where(rec), tox));
      }
      ours.push_back(scorer.probability(text));
      perspective.push_back(value);
      label.push_back(value >= 0.5 ? 1 : 0);
    }
  }
  int64_t positives = 0;
  for (int l : label) positives += l;
  return {{"files", {csv_path.filename().string()}},
          {"continuations", ours.size()},
          {"perspective_toxic", positives},
          {"auc_vs_perspective_0.5", roc_auc(ours, label)},
          {"accuracy_at_0.5", accuracy_at(ours, label, 0.5)},
          {"pearson", pearson(ours, perspective)}};
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}


// ---------------------------------------------------------------------------------------
// train-scorer

int run_train_scorer(Args& args) {
  const std::string config_file = args.get_or("config", "", "the training YAML (configs/scorer.yaml; none: the defaults)");
  auto output = args.get("output", "the scorer file to write (replaces output:)");
  auto data_dir_opt = args.get("data-dir", "the data folder (replaces data_dir:)");
  auto card_opt = args.get("model-card", "the model card to write (replaces model_card:)");
  const bool dump_only = args.flag("dump-config", "print the fully resolved config and exit");
  args.finish();
  ScorerTrainingExperiment c = load_scorer_training_experiment(config_file);
  if (output) c.output = *output;
  if (data_dir_opt) c.data_dir = *data_dir_opt;
  if (card_opt) c.model_card = *card_opt;
  if (dump_only) {
    fmt::print("{}", dump_scorer_training_experiment(c));
    return 0;
  }
  require_single_process("destein train-scorer");
  run_scorer_training_experiment(c);
  return 0;
}

// ---------------------------------------------------------------------------------------
// score

int run_score(Args& args) {
  const std::string input = args.require("input", "JSON Lines of {\"text\": ...} or {\"prompt\": {\"text\": ...}}");
  const std::string output = args.require("output", "where the scored lines are written");
  const std::string scorer_path = args.get_or("scorer", default_scorer_path().string(), "the scorer file");
  const int64_t batch = args.get_int("batch", 4096, "texts per batch");
  args.finish();
  if (batch < 1) throw std::invalid_argument("--batch: expected a positive integer");
  if (fs::exists(input) && fs::exists(output) && fs::equivalent(input, output)) {
    throw std::invalid_argument(fmt::format("--output '{}' is the input file", output));
  }
  LinearScorer scorer = LinearScorer::load(scorer_path);
  const auto t0 = std::chrono::steady_clock::now();
  JsonlReader in(input);
  JsonlWriter out(output);
  std::vector<std::string> texts;
  int64_t total = 0;
  auto flush = [&]() {
    auto scores = scorer.score(texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      json line = {{"text", texts[i]}};
      line["toxicity"] = scores[i] ? json(*scores[i]) : json(nullptr);
      out.write(line);
    }
    total += static_cast<int64_t>(texts.size());
    texts.clear();
  };
  json record;
  while (in.next(record)) {
    texts.push_back(record_text(record, in.where()));
    if (static_cast<int64_t>(texts.size()) == batch) flush();
  }
  flush();
  out.close();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "scored {} texts from {} into {} with {} in {:.2f} s\n", total, input, output,
             scorer.name(), secs);
  return 0;
}

// ---------------------------------------------------------------------------------------
// eval-scorer

int run_eval_scorer(Args& args) {
  const std::string scorer_path = args.get_or("scorer", default_scorer_path().string(), "the scorer file");
  const std::string data_dir_opt = args.get_or("data-dir", "", "the data folder");
  const std::string sets_opt = args.get_or("sets", "heldout", "labelled sets: heldout, none, or names separated by commas");
  const std::string rtp_opt = args.get_or("rtp", "1k", "Perspective agreement on: 1k, 5k, 100, dexperts (comma-separated) or none");
  const std::string report = args.get_or("output", "", "write the report as JSON here");
  args.finish();
  const fs::path data_dir = resolve_data_dir(data_dir_opt);
  LinearScorer scorer = LinearScorer::load(scorer_path);

  std::vector<std::string> sets;
  if (sets_opt == "heldout") {
    for (const auto& spec : labeled_sets()) {
      if (spec.role == LabeledSetRole::kHeldOut) sets.push_back(spec.name);
    }
  } else if (sets_opt != "none") {
    sets = split_list(sets_opt);
  }
  json result = {{"scorer", scorer.name()}};
  json heldout = json::object();
  for (const auto& name : sets) heldout[name] = labeled_set_figures(scorer, load_labeled_set(data_dir, name));
  result["heldout"] = heldout;

  const std::map<std::string, std::vector<std::string>> rtp_files = {
      {"100", {"rtp/100/test.jsonl"}},
      {"1k", {"rtp/1k/output_toxic_1k.jsonl", "rtp/1k/output_no_toxic_1k.jsonl"}},
      {"5k", {"rtp/5k/output_toxic_5k.jsonl", "rtp/5k/output_no_toxic_5k.jsonl"}},
  };
  json rtp = json::object();
  for (const auto& which : (rtp_opt == "none" ? std::vector<std::string>{} : split_list(rtp_opt))) {
    if (which == "dexperts") {
      rtp[which] =
          eval_generations(scorer, data_dir / "rtp/extra/dexperts_human_eval_toxicity.csv");
      continue;
    }
    auto it = rtp_files.find(which);
    if (it == rtp_files.end()) {
      throw std::invalid_argument(fmt::format(
          "--rtp: expected a comma-separated list of 100, 1k, 5k, dexperts (or none), found '{}'",
          which));
    }
    std::vector<fs::path> files;
    for (const auto& f : it->second) files.push_back(data_dir / f);
    rtp[which] = eval_rtp(scorer, files);
  }
  result["rtp"] = rtp;

  const std::string text = result.dump(2);
  std::cout << text << "\n";
  if (!report.empty()) {
    std::ofstream f(report, std::ios::trunc);
    if (!f) throw std::runtime_error(fmt::format("cannot write '{}'", report));
    f << text << "\n";
  }
  return 0;
}

DESTEIN_COMMAND(train_scorer_cmd, "train-scorer",
                "train the linear toxicity scorer (--config configs/scorer.yaml [--output PATH] "
                "[--model-card PATH] [--data-dir DIR] [--dump-config])",
                run_train_scorer);
DESTEIN_COMMAND(score_cmd, "score",
                "score texts for toxicity (--input IN.jsonl --output OUT.jsonl [--scorer PATH])",
                run_score);
DESTEIN_COMMAND(eval_scorer_cmd, "eval-scorer",
                "held-out AUCs and agreement with Perspective on RTP, as JSON "
                "([--scorer PATH] [--rtp 1k,5k,100,dexperts] [--sets heldout|a,b])",
                run_eval_scorer);

}  // namespace
}  // namespace destein::app

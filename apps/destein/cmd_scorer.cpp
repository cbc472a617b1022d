// Scorer commands: train-scorer, score, eval-scorer.
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
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/hf_classifier.hpp"
#include "destein/score/linear_scorer.hpp"
#include "experiment/scorer_agreement.hpp"
#include "experiment/scorer_training_experiment.hpp"
#include "io/csv.hpp"
#include "io/data_folder.hpp"
#include "io/jsonl.hpp"
#include "program_group.hpp"
#include "score/scorer_eval.hpp"
#include "train/scorer_data.hpp"

namespace destein::app {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------
// Shared pieces

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
  const std::string config_file =
      args.get_or("config", "", "the training YAML (configs/scorer.yaml; none: the defaults)");
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
  if (c.version == 2) {
    run_attribute_scorer_training(c);
  } else {
    run_scorer_training_experiment(c);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// score

// A Hugging Face classifier folder: every line of the input kept, with `toxicity` (the
// chosen label's probability) and `scores` (every label's) added.
int score_with_classifier(const std::string& input, const std::string& output,
                          HfClassifierOptions options, int64_t batch) {
  const HfClassifierScorer scorer(std::move(options));
  const auto& labels = scorer.labels();
  const auto t0 = std::chrono::steady_clock::now();
  JsonlReader in(input);
  JsonlWriter out(output);
  std::vector<json> records;
  std::vector<std::string> texts;
  int64_t total = 0;
  auto flush = [&]() {
    const auto probs = scorer.probabilities(texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      json scores = json::object();
      for (size_t c = 0; c < labels.size(); ++c) scores[labels[c]] = probs[i][c];
      json& line = records[i];
      line["toxicity"] = scores[scorer.label()];
      line["scores"] = std::move(scores);
      out.write(line);
    }
    total += static_cast<int64_t>(texts.size());
    texts.clear();
    records.clear();
  };
  json record;
  while (in.next(record)) {
    texts.push_back(record_text(record, in.where()));
    records.push_back(std::move(record));
    if (static_cast<int64_t>(texts.size()) == batch) flush();
  }
  flush();
  out.close();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "scored {} texts from {} into {} with {} in {:.2f} s\n", total, input, output,
             scorer.name(), secs);
  return 0;
}

int run_score(Args& args) {
  const std::string input =
      args.require("input", "JSON Lines of {\"text\": ...} or {\"prompt\": {\"text\": ...}}");
  const std::string output = args.require("output", "where the scored lines are written");
  const std::string scorer_path = args.get_or(
      "scorer", default_scorer_path().string(),
      "the scorer file, or a Hugging Face classifier folder (BERT, RoBERTa, DistilBERT)");
  const int64_t batch = args.get_int("batch", 4096, "texts per batch");
  const auto label = args.get(
      "label", "classifier folder: the label reported as toxicity (default: toxic or toxicity)");
  const std::string device = args.get_or("device", "cpu", "classifier folder: cpu, cuda or cuda:N");
  const int64_t forward_batch =
      args.get_int("forward-batch", 32, "classifier folder: texts per forward pass");
  args.finish();
  if (batch < 1) throw std::invalid_argument("--batch: expected a positive integer");
  if (fs::exists(input) && fs::exists(output) && fs::equivalent(input, output)) {
    throw std::invalid_argument(fmt::format("--output '{}' is the input file", output));
  }
  if (fs::is_directory(scorer_path)) {
    HfClassifierOptions options;
    options.folder = scorer_path;
    options.label = label.value_or("");
    options.device = device;
    options.batch_size = forward_batch;
    return score_with_classifier(input, output, std::move(options), batch);
  }
  if (label) {
    throw std::invalid_argument(
        fmt::format("--label names a label of a classifier folder; --scorer '{}' is a scorer file",
                    scorer_path));
  }
  const auto scorer = load_offline_scorer(scorer_path);
  const auto names = scorer->attributes();
  const auto t0 = std::chrono::steady_clock::now();
  JsonlReader in(input);
  JsonlWriter out(output);
  std::vector<std::string> texts;
  int64_t total = 0;
  auto flush = [&]() {
    const auto scores = scorer->score_attributes(texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      json line = {{"text", texts[i]}};
      for (size_t a = 0; a < names.size(); ++a) {
        line[names[a]] = scores[i][a] ? json(*scores[i][a]) : json(nullptr);
      }
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
             scorer->name(), secs);
  return 0;
}

// ---------------------------------------------------------------------------------------
// eval-scorer

int run_eval_scorer(Args& args) {
  const std::string scorer_path =
      args.get_or("scorer", default_scorer_path().string(), "the scorer file");
  const std::string data_dir_opt = args.get_or("data-dir", "", "the data folder");
  const std::string sets_opt =
      args.get_or("sets", "heldout", "labelled sets: heldout, none, or names separated by commas");
  const std::string rtp_opt = args.get_or(
      "rtp", "1k", "Perspective agreement on: 1k, 5k, 100, dexperts (comma-separated) or none");
  const std::string report = args.get_or("output", "", "write the report as JSON here");
  args.finish();
  const fs::path data_dir = resolve_data_dir(data_dir_opt);
  const auto scorer_ptr = load_offline_scorer(scorer_path);
  ToxicityScorer& scorer = *scorer_ptr;

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
  for (const auto& name : sets)
    heldout[name] = labeled_set_figures(scorer, load_labeled_set(data_dir, name));
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
          dexperts_agreement(scorer, data_dir / "rtp/extra/dexperts_human_eval_toxicity.csv");
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
    rtp[which] = rtp_agreement(scorer, files);
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
                "train a scorer: v2, eight attributes (--config configs/scorer-v2.yaml) or v1 "
                "(--config configs/scorer.yaml) [--output PATH] "
                "[--model-card PATH] [--data-dir DIR] [--dump-config])",
                run_train_scorer);
DESTEIN_COMMAND(score_cmd, "score",
                "score texts: toxicity and, with a v2 scorer, the seven other Perspective "
                "attributes, or with a Hugging Face classifier folder every label's probability "
                "(--input IN.jsonl --output OUT.jsonl [--scorer PATH|DIR] [--label NAME])",
                run_score);
DESTEIN_COMMAND(eval_scorer_cmd, "eval-scorer",
                "held-out AUCs and agreement with Perspective on RTP, as JSON "
                "([--scorer PATH] [--rtp 1k,5k,100,dexperts] [--sets heldout|a,b])",
                run_eval_scorer);

}  // namespace
}  // namespace destein::app

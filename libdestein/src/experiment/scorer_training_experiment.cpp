#include "experiment/scorer_training_experiment.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <fstream>
#include <limits>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "experiment/scorer_agreement.hpp"
#include "experiment/scorer_model_card.hpp"
#include "io/data_folder.hpp"
#include "io/output_lock.hpp"
#include "score/scorer_eval.hpp"
#include "train/rtp_training_split.hpp"

namespace destein {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string normalized_key(const std::string& text) {
  std::string key;
  for (const auto& tok : scoring_tokens(text)) {
    if (!key.empty()) key += ' ';
    key += tok;
  }
  return key;
}

void log_line(const std::string& line) { fmt::print(stderr, "{}\n", line); }

}  // namespace

json labeled_set_figures(ToxicityScorer& scorer, const std::vector<LabeledText>& data) {
  std::vector<double> p;
  std::vector<int> y;
  int64_t positives = 0;
  std::vector<std::string> texts;
  for (const auto& t : data) {
    texts.push_back(t.text);
    y.push_back(t.label);
    positives += t.label;
  }
  for (const auto& v : scorer.score(texts)) {
    if (!v)
      throw std::runtime_error(
          fmt::format("scorer {} gave no score for a labelled text", scorer.name()));
    p.push_back(*v);
  }
  return {{"texts", data.size()},
          {"toxic", positives},
          {"auc", roc_auc(p, y)},
          {"accuracy_at_0.5", accuracy_at(p, y, 0.5)}};
}

namespace {

// The labelled data of an experiment: the held-out sets, and the training sets deduplicated
// against themselves and the held-out sets.
struct LabeledData {
  std::map<std::string, std::vector<LabeledText>> heldout;
  std::vector<LabeledText> train;
  int64_t repeats = 0, conflicting = 0, in_heldout = 0, empty = 0;
};

LabeledData load_labeled_data(const ScorerTrainingExperiment& c, const fs::path& data_dir) {
  for (const auto& name : c.train_sets) {
    if (labeled_set(name).role != LabeledSetRole::kTrain) {
      throw std::invalid_argument(fmt::format(
          "train_sets: '{}' is a held-out set; training on it would void its held-out figures",
          name));
    }
  }
  for (const auto& name : c.heldout_sets) labeled_set(name);  // unknown names fail here
  LabeledData d;
  auto& heldout = d.heldout;
  auto& train = d.train;
  int64_t& repeats = d.repeats;
  int64_t& conflicting = d.conflicting;
  int64_t& in_heldout = d.in_heldout;
  int64_t& empty = d.empty;
  std::unordered_set<std::string> heldout_keys;
  for (const auto& name : c.heldout_sets) {
    heldout[name] = load_labeled_set(data_dir, name);
    for (const auto& t : heldout[name]) heldout_keys.insert(normalized_key(t.text));
  }

  std::vector<std::string> train_keys;
  for (const auto& name : c.train_sets) {
    auto set = load_labeled_set(data_dir, name);
    log_line(fmt::format("loaded {:<28} {:>6} texts", name, set.size()));
    for (auto& t : set) {
      train_keys.push_back(c.dedupe ? normalized_key(t.text) : std::string());
      train.push_back(std::move(t));
    }
  }
  if (c.dedupe) {
    std::unordered_map<std::string, int> labels_seen;  // bit 0: label 0 seen, bit 1: label 1
    for (size_t i = 0; i < train.size(); ++i) labels_seen[train_keys[i]] |= 1 << train[i].label;
    std::unordered_set<std::string> kept;
    std::vector<LabeledText> out;
    for (size_t i = 0; i < train.size(); ++i) {
      const std::string& key = train_keys[i];
      if (key.empty()) {
        ++empty;
      } else if (labels_seen[key] == 3) {
        ++conflicting;
      } else if (heldout_keys.count(key)) {
        ++in_heldout;
      } else if (!kept.insert(key).second) {
        ++repeats;
      } else {
        out.push_back(std::move(train[i]));
      }
    }
    train = std::move(out);
    log_line(
        fmt::format("dedupe: dropped {} repeats, {} texts with both labels, {} texts also "
                    "in a held-out set, {} without words; {} texts remain",
                    repeats, conflicting, in_heldout, empty, train.size()));
  }
  return d;
}

json training_data_json(const ScorerTrainingExperiment& c, const std::vector<LabeledText>& train) {
  json data_list = json::array();
  for (const auto& name : c.train_sets) {
    const auto& spec = labeled_set(name);
    int64_t toxic = 0, clean = 0;
    for (const auto& t : train) {
      if (t.source == name) (t.label ? toxic : clean) += 1;
    }
    data_list.push_back({{"set", name},
                         {"files", spec.files},
                         {"label_rule", spec.label_rule},
                         {"toxic", toxic},
                         {"non_toxic", clean}});
  }
  return data_list;
}

}  // namespace

LinearScorer run_scorer_training_experiment(const ScorerTrainingExperiment& c) {
  if (c.version != 1) {
    throw std::invalid_argument(fmt::format(
        "version: run_scorer_training_experiment() trains version 1, found {}; version 2 is "
        "run_attribute_scorer_training()",
        c.version));
  }
  const OutputLock lock = lock_output_file(c.output);
  const fs::path data_dir = resolve_data_dir(c.data_dir);
  const auto t0 = std::chrono::steady_clock::now();
  LabeledData d = load_labeled_data(c, data_dir);
  auto& heldout = d.heldout;
  auto& train = d.train;
  const int64_t repeats = d.repeats, conflicting = d.conflicting, in_heldout = d.in_heldout,
                empty = d.empty;

  LinearScorer scorer = LinearScorer::train(train, c.features, c.train, log_line);

  json prov = scorer.provenance();
  prov["training_data"] = training_data_json(c, train);
  prov["dedupe"] = {{"enabled", c.dedupe},
                    {"repeats", repeats},
                    {"conflicting", conflicting},
                    {"in_heldout", in_heldout},
                    {"without_words", empty}};
  prov["config_yaml"] = dump_scorer_training_experiment(c);
  json heldout_report = json::object();
  for (const auto& [name, set] : heldout) {
    heldout_report[name] = labeled_set_figures(scorer, set);
    log_line(fmt::format("held-out {:<28} AUC {:.4f}  accuracy at 0.5 {:.4f}  ({} texts)", name,
                         heldout_report[name]["auc"].get<double>(),
                         heldout_report[name]["accuracy_at_0.5"].get<double>(), set.size()));
  }
  prov["heldout"] = heldout_report;
  scorer.set_provenance(prov);

  const fs::path out_path(c.output);
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
  scorer.save(out_path);
  if (!c.model_card.empty()) {
    const fs::path card_path(c.model_card);
    if (card_path.has_parent_path()) fs::create_directories(card_path.parent_path());
    std::ofstream card(card_path, std::ios::trunc);
    if (!card)
      throw std::runtime_error(fmt::format("cannot write the model card '{}'", c.model_card));
    card << scorer_model_card_v1(c, prov, scorer);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_line(fmt::format("wrote {} ({} bytes){} in {:.1f} s", out_path.string(),
                       fs::file_size(out_path), c.model_card.empty() ? "" : " and " + c.model_card,
                       secs));
  return scorer;
}

AttributeScorer run_attribute_scorer_training(const ScorerTrainingExperiment& c) {
  if (c.version != 2) {
    throw std::invalid_argument(fmt::format(
        "version: run_attribute_scorer_training() trains version 2, found {}", c.version));
  }
  const OutputLock lock = lock_output_file(c.output);
  const fs::path data_dir = resolve_data_dir(c.data_dir);
  const auto t0 = std::chrono::steady_clock::now();
  LabeledData d = load_labeled_data(c, data_dir);
  const RtpTrainingSplit split = load_rtp_training_split(data_dir);
  log_line(fmt::format(
      "RTP training split: {} prompts read, {} evaluation-only prompts removed ({} in 1k, {} in "
      "100, {} in DExperts), {} repeats; {} remain",
      split.read, split.excluded, split.excluded_1k, split.excluded_100, split.excluded_dexperts,
      split.repeats, split.prompts.size()));

  std::vector<AttributeExample> examples;
  examples.reserve(split.prompts.size() + d.train.size());
  const float kNone = std::numeric_limits<float>::quiet_NaN();
  for (const auto& p : split.prompts) {
    AttributeExample e;
    e.text = p.text;
    for (int a = 0; a < kNumAttributes; ++a)
      e.target[static_cast<size_t>(a)] = static_cast<float>(p.scores[static_cast<size_t>(a)]);
    e.source = "rtp_5k_allowed";
    e.perspective = true;
    examples.push_back(std::move(e));
  }
  for (const auto& t : d.train) {
    AttributeExample e;
    e.text = t.text;
    e.target.fill(kNone);
    e.target[0] = static_cast<float>(t.label);
    e.source = t.source;
    examples.push_back(std::move(e));
  }
  AttributeScorer scorer = AttributeScorer::train(examples, c.features, c.v2, log_line);

  json prov = scorer.provenance();
  prov["rtp_split"] = split.report();
  prov["training_data"] = training_data_json(c, d.train);
  prov["dedupe"] = {{"enabled", c.dedupe},
                    {"repeats", d.repeats},
                    {"conflicting", d.conflicting},
                    {"in_heldout", d.in_heldout},
                    {"without_words", d.empty}};
  prov["config_yaml"] = dump_scorer_training_experiment(c);
  json heldout_report = json::object();
  for (const auto& [name, set] : d.heldout) {
    heldout_report[name] = labeled_set_figures(scorer, set);
    log_line(fmt::format("held-out {:<28} AUC {:.4f}  accuracy at 0.5 {:.4f}  ({} texts)", name,
                         heldout_report[name]["auc"].get<double>(),
                         heldout_report[name]["accuracy_at_0.5"].get<double>(), set.size()));
  }
  prov["heldout"] = heldout_report;
  json agreement;
  agreement["rtp_1k"] = rtp_agreement(scorer, {data_dir / "rtp/1k/output_toxic_1k.jsonl",
                                               data_dir / "rtp/1k/output_no_toxic_1k.jsonl"});
  agreement["rtp_100"] = rtp_agreement(scorer, {data_dir / "rtp/100/test.jsonl"});
  agreement["dexperts"] =
      dexperts_agreement(scorer, data_dir / "rtp/extra/dexperts_human_eval_toxicity.csv");
  for (const auto& name : perspective_attributes()) {
    log_line(fmt::format("RTP 1k {:<18} Pearson {:.4f}", name,
                         agreement["rtp_1k"]["attributes"][name]["pearson"].get<double>()));
  }
  log_line(
      fmt::format("RTP 1k toxicity AUC {:.4f}; DExperts continuations AUC {:.4f}, Pearson {:.4f}, "
                  "same system rank: {}",
                  agreement["rtp_1k"]["auc_vs_perspective_0.5"].get<double>(),
                  agreement["dexperts"]["auc_vs_perspective_0.5"].get<double>(),
                  agreement["dexperts"]["pearson"].get<double>(),
                  agreement["dexperts"]["same_rank"].get<bool>()));
  prov["agreement"] = agreement;
  scorer.set_provenance(prov);

  const fs::path out_path(c.output);
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
  scorer.save(out_path);
  if (!c.model_card.empty()) {
    const fs::path card_path(c.model_card);
    if (card_path.has_parent_path()) fs::create_directories(card_path.parent_path());
    std::ofstream card(card_path, std::ios::trunc);
    if (!card)
      throw std::runtime_error(fmt::format("cannot write the model card '{}'", c.model_card));
    card << scorer_model_card_v2(c, prov, scorer);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_line(fmt::format("wrote {} ({} bytes){} in {:.1f} s", out_path.string(),
                       fs::file_size(out_path), c.model_card.empty() ? "" : " and " + c.model_card,
                       secs));
  return scorer;
}

}  // namespace destein

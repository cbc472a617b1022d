#include "destein/experiment/scorer_training_experiment.hpp"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "destein/io/data_folder.hpp"
#include "destein/io/output_lock.hpp"
#include "destein/score/scorer_eval.hpp"

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

std::string fmt4(const json& v) { return fmt::format("{:.4f}", v.get<double>()); }

std::string model_card(const ScorerTrainingExperiment& c, const json& prov, const LinearScorer& s) {
  std::string md;
  md += "# Toxicity scorer `" + fs::path(c.output).filename().string() + "`\n\n";
  md += "Written by `destein train-scorer";
  if (!c.config_path.empty()) md += " --config " + c.config_path;
  md += "`; every figure below was measured by that run.\n\n";
  md +=
      "Logistic regression over hashed word and character n-grams, Platt-calibrated so that "
      "its output reads like a probability of toxicity (as Perspective's does). Offline, "
      "Eigen-only, single core. Use: `destein score --input IN.jsonl --output OUT.jsonl`; "
      "library: `destein::LinearScorer::load(destein::default_scorer_path())`.\n\n";
  md += "## Data used (training)\n\n";
  md +=
      "Files relative to `shared/data/` (see its README and PROVENANCE). Nothing under "
      "`rtp/` was used.\n\n";
  md += "| set | files | label rule | toxic | non-toxic |\n|---|---|---|---|---|\n";
  for (const auto& d : prov["training_data"]) {
    std::string files;
    for (const auto& f : d["files"])
      files += (files.empty() ? "`" : ", `") + f.get<std::string>() + "`";
    md += fmt::format("| {} | {} | {} | {} | {} |\n", d["set"].get<std::string>(), files,
                      d["label_rule"].get<std::string>(), d["toxic"].get<int64_t>(),
                      d["non_toxic"].get<int64_t>());
  }
  const auto& dd = prov["dedupe"];
  if (c.dedupe) {
    md += fmt::format(
        "\nBefore training, texts were compared after normalisation: {} repeats, {} texts "
        "given both labels and {} texts also found in a held-out set were dropped.\n",
        dd["repeats"].get<int64_t>(), dd["conflicting"].get<int64_t>(),
        dd["in_heldout"].get<int64_t>());
  }
  const auto& ts = prov["training_summary"];
  md += fmt::format(
      "\n{} texts fitted the weights; a stratified {} ({}%) were held out of the fit for "
      "Platt scaling.\n",
      ts["fit_texts"].get<int64_t>(), ts["calibration_texts"].get<int64_t>(),
      c.train.calibration_fraction * 100);
  md += "\n## Features\n\n";
  md += fmt::format(
      "- Normalisation (`destein::scoring_tokens`): lower case; apostrophes dropped (don't -> "
      "dont); URLs -> `url`, @mentions -> `@user`, numbers -> `0`; leetspeak undone inside words "
      "(sh1t, a$$, sh!t); masking stars kept inside words (f*ck); letters repeated more than "
      "twice squeezed to two; emoji stand alone.\n"
      "- Word n-grams 1..{}, character n-grams {}..{} bytes inside each word padded as "
      "`<word>`.\n"
      "- Signed feature hashing (FNV-1a 64 + murmur fmix64) into 2^{} = {} buckets; value "
      "`{}` per distinct n-gram, L2-normalised per text.\n",
      c.features.word_ngram_max, c.features.char_ngram_min, c.features.char_ngram_max,
      c.features.hash_bits, s.num_weights(), c.features.value);
  md += "\n## Training\n\n";
  md += fmt::format(
      "Class-balanced mean log-loss + {}/2 |w|^2, L-BFGS (memory {}) from zero, deterministic "
      "(single thread, seed {} for the calibration split only): stopped by {} after {} "
      "iterations, objective {:.4f}. Platt: p = sigmoid({:.4f} m + {:.4f}) on the margin m. "
      "Weights stored as f16.\n",
      c.train.l2, c.train.lbfgs_memory, c.train.seed, ts["stop"].get<std::string>(),
      ts["iterations"].get<int>(), ts["objective"].get<double>(), s.calibration_a(),
      s.calibration_b());
  md += fmt::format(
      "\nCalibration slice (in-distribution, held out of the fit): AUC {}, accuracy at 0.5 {}.\n",
      fmt4(ts["calibration_auc"]), fmt4(ts["calibration_accuracy_at_0.5"]));
  md += "\n## Held-out figures\n\n";
  md += "Sets never used for training or calibration:\n\n";
  md += "| set | texts | toxic | AUC | accuracy at 0.5 |\n|---|---|---|---|---|\n";
  for (const auto& [name, r] : prov["heldout"].items()) {
    md += fmt::format("| {} | {} | {} | {} | {} |\n", name, r["texts"].get<int64_t>(),
                      r["toxic"].get<int64_t>(), fmt4(r["auc"]), fmt4(r["accuracy_at_0.5"]));
  }
  md +=
      "\nAgreement with Perspective on RealToxicityPrompts is measured separately by "
      "`destein eval-scorer` and reported in `docs/scorer.md`.\n";
  md += "\n## File\n\n";
  md +=
      "safetensors: tensor `weight` (F16, [2^hash_bits]), tensor `bias` (F32, [1]); "
      "`__metadata__` holds `format` = `destein.linear_scorer`, `format_version`, `features` "
      "(hashing parameters and the feature-code id), `calibration`, `checksum_fnv1a64` of "
      "the tensor bytes, `self_test` (texts with their scores, re-checked on every load) and "
      "`provenance` (this card's data as JSON).\n";
  md +=
      "\n## Limits\n\n"
      "A bag of n-grams: it sees words, not meaning. It under-rates toxicity carried without "
      "rude words (implicit hate, threats phrased politely) and over-rates quoted or negated "
      "slurs and profanity used in a friendly way (see the hatecheck figure). English only. "
      "Trained on comments and tweets; its scores are not Perspective's scores.\n";
  return md;
}

}  // namespace

json labeled_set_figures(LinearScorer& scorer, const std::vector<LabeledText>& data) {
  std::vector<double> p;
  std::vector<int> y;
  int64_t positives = 0;
  for (const auto& t : data) {
    p.push_back(scorer.probability(t.text));
    y.push_back(t.label);
    positives += t.label;
  }
  return {{"texts", data.size()},
          {"toxic", positives},
          {"auc", roc_auc(p, y)},
          {"accuracy_at_0.5", accuracy_at(p, y, 0.5)}};
}

Schema<ScorerTrainingExperiment> scorer_training_schema() {
  using E = ScorerTrainingExperiment;
  Schema<LinearFeatureOptions> features;
  features.field("hash_bits", &LinearFeatureOptions::hash_bits)
      .field("word_ngram_max", &LinearFeatureOptions::word_ngram_max)
      .field("char_ngram_min", &LinearFeatureOptions::char_ngram_min)
      .field("char_ngram_max", &LinearFeatureOptions::char_ngram_max)
      .field("value", &LinearFeatureOptions::value);
  Schema<LinearTrainOptions> train;
  train.field("l2", &LinearTrainOptions::l2)
      .field("max_iterations", &LinearTrainOptions::max_iterations)
      .field("tolerance", &LinearTrainOptions::tolerance)
      .field("lbfgs_memory", &LinearTrainOptions::lbfgs_memory)
      .field("class_balance", &LinearTrainOptions::class_balance)
      .field("calibration_fraction", &LinearTrainOptions::calibration_fraction)
      .field("seed", &LinearTrainOptions::seed);
  Schema<E> s;
  s.field("data_dir", &E::data_dir)
      .field("output", &E::output)
      .field("model_card", &E::model_card)
      .field("train_sets", &E::train_sets)
      .field("heldout_sets", &E::heldout_sets)
      .field("dedupe", &E::dedupe)
      .section("features", &E::features, features)
      .section("train", &E::train, train);
  return s;
}

ScorerTrainingExperiment load_scorer_training_experiment(const std::filesystem::path& yaml) {
  if (yaml.empty()) return {};
  ScorerTrainingExperiment e = scorer_training_schema().load(ConfigNode::load_file(yaml));
  e.config_path = yaml.string();
  return e;
}

std::string dump_scorer_training_experiment(const ScorerTrainingExperiment& e) {
  return scorer_training_schema().dump(e) + "\n";
}

LinearScorer run_scorer_training_experiment(const ScorerTrainingExperiment& c) {
  const OutputLock lock = lock_output_file(c.output);
  const fs::path data_dir = resolve_data_dir(c.data_dir);
  for (const auto& name : c.train_sets) {
    if (labeled_set(name).role != LabeledSetRole::kTrain) {
      throw std::invalid_argument(fmt::format(
          "train_sets: '{}' is a held-out set; training on it would void its held-out figures",
          name));
    }
  }
  for (const auto& name : c.heldout_sets) labeled_set(name);  // unknown names fail here
  const auto t0 = std::chrono::steady_clock::now();

  std::map<std::string, std::vector<LabeledText>> heldout;
  std::unordered_set<std::string> heldout_keys;
  for (const auto& name : c.heldout_sets) {
    heldout[name] = load_labeled_set(data_dir, name);
    for (const auto& t : heldout[name]) heldout_keys.insert(normalized_key(t.text));
  }

  std::vector<LabeledText> train;
  std::vector<std::string> train_keys;
  for (const auto& name : c.train_sets) {
    auto set = load_labeled_set(data_dir, name);
    log_line(fmt::format("loaded {:<28} {:>6} texts", name, set.size()));
    for (auto& t : set) {
      train_keys.push_back(c.dedupe ? normalized_key(t.text) : std::string());
      train.push_back(std::move(t));
    }
  }
  int64_t repeats = 0, conflicting = 0, in_heldout = 0, empty = 0;
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

  LinearScorer scorer = LinearScorer::train(train, c.features, c.train, log_line);

  json prov = scorer.provenance();
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
  prov["training_data"] = data_list;
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
    card << model_card(c, prov, scorer);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_line(fmt::format("wrote {} ({} bytes){} in {:.1f} s", out_path.string(),
                       fs::file_size(out_path), c.model_card.empty() ? "" : " and " + c.model_card,
                       secs));
  return scorer;
}

}  // namespace destein

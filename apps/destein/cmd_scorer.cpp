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
#include "yaml_config.hpp"

namespace destein::app {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------
// configs/scorer.yaml, one-to-one.

struct ScorerTrainConfig {
  std::string data_dir;  // empty: $DESTEIN_DATA, else the build default
  std::string output = "models/scorer/toxicity-linear-v1.safetensors";
  std::string model_card = "models/scorer/MODEL_CARD.md";  // empty: none written
  std::vector<std::string> train_sets = {"detox_civil_comments_dev",
                                         "davidson_hate_offensive",
                                         "olid",
                                         "toxic_spans",
                                         "paradetox",
                                         "paradetox_cannot_rewrite",
                                         "lexicons"};
  std::vector<std::string> heldout_sets = {"detox_civil_comments_test", "wiki_toxicity_nonfuzzed",
                                           "jigsaw2018_sample", "hatecheck", "toxigen"};
  // Drop repeated texts, texts given both labels, and training texts that are also in a
  // held-out set (compared after scoring_tokens()).
  bool dedupe = true;
  LinearFeatureOptions features;
  LinearTrainOptions train;
};

ScorerTrainConfig read_train_config(const std::string& file) {
  ScorerTrainConfig c;
  if (file.empty()) return c;
  const ConfigNode root = ConfigNode::load_file(file);
  c.data_dir = root.get("data_dir", c.data_dir);
  c.output = root.get("output", c.output);
  c.model_card = root.get("model_card", c.model_card);
  c.train_sets = root.get("train_sets", c.train_sets);
  c.heldout_sets = root.get("heldout_sets", c.heldout_sets);
  c.dedupe = root.get("dedupe", c.dedupe);
  const ConfigNode f = root.child("features");
  c.features.hash_bits = f.get("hash_bits", c.features.hash_bits);
  c.features.word_ngram_max = f.get("word_ngram_max", c.features.word_ngram_max);
  c.features.char_ngram_min = f.get("char_ngram_min", c.features.char_ngram_min);
  c.features.char_ngram_max = f.get("char_ngram_max", c.features.char_ngram_max);
  c.features.value = f.get("value", c.features.value);
  const ConfigNode t = root.child("train");
  c.train.l2 = t.get("l2", c.train.l2);
  c.train.max_iterations = t.get("max_iterations", c.train.max_iterations);
  c.train.tolerance = t.get("tolerance", c.train.tolerance);
  c.train.lbfgs_memory = t.get("lbfgs_memory", c.train.lbfgs_memory);
  c.train.class_balance = t.get("class_balance", c.train.class_balance);
  c.train.calibration_fraction = t.get("calibration_fraction", c.train.calibration_fraction);
  c.train.seed = t.get("seed", c.train.seed);
  root.finish();
  return c;
}

std::string dump_config(const ScorerTrainConfig& c) {
  YAML::Emitter y;
  y.SetDoublePrecision(15);
  y << YAML::BeginMap;
  y << YAML::Key << "data_dir" << YAML::Value << c.data_dir;
  y << YAML::Key << "output" << YAML::Value << c.output;
  y << YAML::Key << "model_card" << YAML::Value << c.model_card;
  y << YAML::Key << "train_sets" << YAML::Value << YAML::Flow << c.train_sets;
  y << YAML::Key << "heldout_sets" << YAML::Value << YAML::Flow << c.heldout_sets;
  y << YAML::Key << "dedupe" << YAML::Value << c.dedupe;
  y << YAML::Key << "features" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "hash_bits" << YAML::Value << c.features.hash_bits;
  y << YAML::Key << "word_ngram_max" << YAML::Value << c.features.word_ngram_max;
  y << YAML::Key << "char_ngram_min" << YAML::Value << c.features.char_ngram_min;
  y << YAML::Key << "char_ngram_max" << YAML::Value << c.features.char_ngram_max;
  y << YAML::Key << "value" << YAML::Value << c.features.value;
  y << YAML::EndMap;
  y << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "l2" << YAML::Value << c.train.l2;
  y << YAML::Key << "max_iterations" << YAML::Value << c.train.max_iterations;
  y << YAML::Key << "tolerance" << YAML::Value << c.train.tolerance;
  y << YAML::Key << "lbfgs_memory" << YAML::Value << c.train.lbfgs_memory;
  y << YAML::Key << "class_balance" << YAML::Value << c.train.class_balance;
  y << YAML::Key << "calibration_fraction" << YAML::Value << c.train.calibration_fraction;
  y << YAML::Key << "seed" << YAML::Value << c.train.seed;
  y << YAML::EndMap;
  y << YAML::EndMap;
  return std::string(y.c_str()) + "\n";
}

// ---------------------------------------------------------------------------------------
// Shared pieces

std::string normalized_key(const std::string& text) {
  std::string key;
  for (const auto& tok : scoring_tokens(text)) {
    if (!key.empty()) key += ' ';
    key += tok;
  }
  return key;
}

void log_line(const std::string& line) { fmt::print(stderr, "{}\n", line); }

json eval_set(LinearScorer& scorer, const std::vector<LabeledText>& data) {
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

std::string fmt4(const json& v) { return fmt::format("{:.4f}", v.get<double>()); }

// ---------------------------------------------------------------------------------------
// train-scorer

std::string model_card(const ScorerTrainConfig& c, const json& prov, const LinearScorer& s,
                       const std::string& config_file) {
  std::string md;
  md += "# Toxicity scorer `" + fs::path(c.output).filename().string() + "`\n\n";
  md += "Written by `destein train-scorer";
  if (!config_file.empty()) md += " --config " + config_file;
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

int run_train_scorer(Args& args) {
  const std::string config_file = args.get_or("config", "");
  auto output = args.get("output");
  auto data_dir_opt = args.get("data-dir");
  auto card_opt = args.get("model-card");
  const bool dump_only = args.flag("dump-config");
  args.finish();
  ScorerTrainConfig c = read_train_config(config_file);
  if (output) c.output = *output;
  if (data_dir_opt) c.data_dir = *data_dir_opt;
  if (card_opt) c.model_card = *card_opt;
  if (dump_only) {
    fmt::print("{}", dump_config(c));
    return 0;
  }
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
  prov["config_yaml"] = dump_config(c);
  json heldout_report = json::object();
  for (const auto& [name, set] : heldout) {
    heldout_report[name] = eval_set(scorer, set);
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
    card << model_card(c, prov, scorer, config_file);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_line(fmt::format("wrote {} ({} bytes){} in {:.1f} s", out_path.string(),
                       fs::file_size(out_path), c.model_card.empty() ? "" : " and " + c.model_card,
                       secs));
  return 0;
}

// ---------------------------------------------------------------------------------------
// score

int run_score(Args& args) {
  const std::string input = args.require("input");
  const std::string output = args.require("output");
  const std::string scorer_path = args.get_or("scorer", default_scorer_path().string());
  const int64_t batch = args.get_int("batch", 4096);
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
  const std::string scorer_path = args.get_or("scorer", default_scorer_path().string());
  const std::string data_dir_opt = args.get_or("data-dir", "");
  const std::string sets_opt = args.get_or("sets", "heldout");
  const std::string rtp_opt = args.get_or("rtp", "1k");
  const std::string report = args.get_or("output", "");
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
  for (const auto& name : sets) heldout[name] = eval_set(scorer, load_labeled_set(data_dir, name));
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

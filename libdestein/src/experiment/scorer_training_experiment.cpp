#include "destein/experiment/scorer_training_experiment.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <limits>
#include <fstream>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "destein/experiment/scorer_agreement.hpp"
#include "destein/io/data_folder.hpp"
#include "destein/io/output_lock.hpp"
#include "destein/train/rtp_training_split.hpp"
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
      "Eigen-only, single core. Use: `destein score --scorer FILE --input IN.jsonl --output OUT.jsonl`; "
      "library: `destein::LinearScorer::load(FILE)` or `destein::load_offline_scorer(FILE)`.\n\n";
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
    if (!v) throw std::runtime_error(fmt::format("scorer {} gave no score for a labelled text", scorer.name()));
    p.push_back(*v);
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
  // The v2 section keeps its flat keys: those it shares with `train:` (all but
  // class_balance, which v2 fixes to true) map onto AttributeTrainOptions::linear.
  using V2 = AttributeTrainOptions;
  Schema<V2> v2;
  v2.field("l2", [](V2& o) -> double& { return o.linear.l2; })
      .field("l2_other", &V2::l2_other)
      .field("other_hash_bits", &V2::other_hash_bits)
      .field("perspective_share", &V2::perspective_share)
      .field("max_iterations", [](V2& o) -> int& { return o.linear.max_iterations; })
      .field("tolerance", [](V2& o) -> double& { return o.linear.tolerance; })
      .field("lbfgs_memory", [](V2& o) -> int& { return o.linear.lbfgs_memory; })
      .field("calibration_fraction",
             [](V2& o) -> double& { return o.linear.calibration_fraction; })
      .field("seed", [](V2& o) -> uint64_t& { return o.linear.seed; });
  Schema<E> s;
  s.field("version", &E::version)
      .field("data_dir", &E::data_dir)
      .field("output", &E::output)
      .field("model_card", &E::model_card)
      .field("train_sets", &E::train_sets)
      .field("heldout_sets", &E::heldout_sets)
      .field("dedupe", &E::dedupe)
      .section("features", &E::features, features)
      .section("train", &E::train, train)
      .section("v2", &E::v2, v2);
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
    card << model_card(c, prov, scorer);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_line(fmt::format("wrote {} ({} bytes){} in {:.1f} s", out_path.string(),
                       fs::file_size(out_path), c.model_card.empty() ? "" : " and " + c.model_card,
                       secs));
  return scorer;
}

namespace {

std::string model_card_v2(const ScorerTrainingExperiment& c, const json& prov, const AttributeScorer& s) {
  const auto& names = perspective_attributes();
  std::string md;
  md += "# Scorer v2 `" + fs::path(c.output).filename().string() + "`: the eight Perspective attributes\n\n";
  md += "Written by `destein train-scorer";
  if (!c.config_path.empty()) md += " --config " + c.config_path;
  md += "`; every figure below was measured by that run.\n\n";
  md +=
      "Eight logistic-regression heads (toxicity, severe_toxicity, profanity, insult, threat, "
      "identity_attack, sexually_explicit, flirtation) over shared hashed word and character "
      "n-grams, each Platt-calibrated against Perspective's own scores, so that its outputs read "
      "like Perspective's probabilities. Offline, Eigen-only, single core. Use: `destein score "
      "--input IN.jsonl --output OUT.jsonl` (eight keys per line); library: "
      "`destein::AttributeScorer::load(destein::default_scorer_path())`. The v1 toxicity-only "
      "scorer (`toxicity-linear-v1.safetensors`) stays loadable with `--scorer`.\n\n";
  md += "## Data used (training)\n\n";
  md += "Files relative to `shared/data/` (see its README and PROVENANCE).\n\n";
  const auto& rtp = prov["rtp_split"];
  md += fmt::format(
      "**Perspective's scores of RTP prompts** (all eight heads): `{}`. From their {} prompts, "
      "every prompt that also appears in an evaluation-only file (`{}`) was removed: {} prompts "
      "({} match `rtp/1k`, {} `rtp/100`, {} a DExperts `sentprefix`; a prompt can match more "
      "than one), and {} repeats. Matching: {}. {} prompts remain.\n\n",
      fmt::join(rtp["training_files"].get<std::vector<std::string>>(), "`, `"), rtp["read"].get<int64_t>(),
      fmt::join(rtp["evaluation_files"].get<std::vector<std::string>>(), "`, `"),
      rtp["excluded"].get<int64_t>(), rtp["excluded_in_1k"].get<int64_t>(),
      rtp["excluded_in_100"].get<int64_t>(), rtp["excluded_in_dexperts"].get<int64_t>(),
      rtp["repeats"].get<int64_t>(), rtp["normalisation"].get<std::string>(), rtp["kept"].get<int64_t>());
  md += "**Labelled sets** (toxicity head only, class-balanced):\n\n";
  md += "| set | files | label rule | toxic | non-toxic |\n|---|---|---|---|---|\n";
  for (const auto& d : prov["training_data"]) {
    std::string files;
    for (const auto& f : d["files"]) files += (files.empty() ? "`" : ", `") + f.get<std::string>() + "`";
    md += fmt::format("| {} | {} | {} | {} | {} |\n", d["set"].get<std::string>(), files,
                      d["label_rule"].get<std::string>(), d["toxic"].get<int64_t>(), d["non_toxic"].get<int64_t>());
  }
  const auto& dd = prov["dedupe"];
  md += fmt::format(
      "\nLabelled texts were compared after normalisation: {} repeats, {} texts given both labels "
      "and {} texts also found in a held-out set were dropped.\n",
      dd["repeats"].get<int64_t>(), dd["conflicting"].get<int64_t>(), dd["in_heldout"].get<int64_t>());
  const auto& ts = prov["training_summary"];
  md += fmt::format(
      "\n{} Perspective-scored prompts and {} labelled texts fitted the weights; {} prompts "
      "(a seeded {}%) were held out of every fit for calibration.\n",
      ts["perspective_fit_texts"].get<int64_t>(), ts["labeled_fit_texts"].get<int64_t>(),
      ts["calibration_texts"].get<int64_t>(), c.v2.linear.calibration_fraction * 100);
  md += "\nNot used for anything but the figures below: `rtp/1k`, `rtp/100`, the DExperts file, the "
        "held-out labelled sets.\n";
  md += "\n## Training\n\n";
  md += fmt::format(
      "Features as v1 (`destein::scoring_tokens`, word 1..{}-grams, character {}..{}-grams in "
      "`<word>`, signed hashing, `{}` values, L2-normalised). Toxicity head: 2^{} weights, "
      "cross-entropy against Perspective's score on the prompts (share {:.3g}) plus class-balanced "
      "log-loss on the labelled texts (share {:.3g}), L2 {}. Other heads: 2^{} weights (the toxicity "
      "bucket's low bits), cross-entropy against Perspective's score of that attribute, L2 {}. "
      "L-BFGS (memory {}, at most {} iterations) from zero, single thread; Platt scaling of each "
      "head against Perspective's scores on the calibration prompts. Weights stored as f16: {} "
      "bytes of tensors.\n",
      c.features.word_ngram_max, c.features.char_ngram_min, c.features.char_ngram_max,
      c.features.value, c.features.hash_bits, c.v2.perspective_share, 1 - c.v2.perspective_share,
      c.v2.linear.l2, c.v2.other_hash_bits, c.v2.l2_other, c.v2.linear.lbfgs_memory,
      c.v2.linear.max_iterations, s.weight_bytes());
  md += "\n| head | iterations | stop | Platt a | Platt b | calibration Pearson |\n|---|---|---|---|---|---|\n";
  for (int a = 0; a < kNumAttributes; ++a) {
    const auto& h = ts["heads"][names[static_cast<size_t>(a)]];
    md += fmt::format("| {} | {} | {} | {:.4f} | {:.4f} | {} |\n", names[static_cast<size_t>(a)],
                      h["iterations"].get<int>(), h["stop"].get<std::string>(), s.calibration(a).first,
                      s.calibration(a).second, fmt4(h["calibration_pearson"]));
  }
  md += "\n## Agreement with Perspective (evaluation-only files)\n\n";
  const auto& ag = prov["agreement"];
  md += "| attribute | RTP 1k Pearson | RTP 1k AUC vs Perspective >= 0.5 | RTP 100 Pearson |\n|---|---|---|---|\n";
  for (const auto& name : names) {
    const auto& r1 = ag["rtp_1k"]["attributes"][name];
    const auto& r100 = ag["rtp_100"]["attributes"][name];
    md += fmt::format("| {} | {} | {} | {} |\n", name, fmt4(r1["pearson"]),
                      r1.contains("auc_vs_perspective_0.5") ? fmt4(r1["auc_vs_perspective_0.5"]) : "-",
                      fmt4(r100["pearson"]));
  }
  const auto& dx = ag["dexperts"];
  md += fmt::format(
      "\nModel continuations (DExperts human-eval file, {} distinct continuations, {} toxic by "
      "Perspective): toxicity AUC {}, Pearson {}, accuracy at 0.5 {}.\n\n",
      dx["continuations"].get<int64_t>(), dx["perspective_toxic"].get<int64_t>(),
      fmt4(dx["auc_vs_perspective_0.5"]), fmt4(dx["pearson"]), fmt4(dx["accuracy_at_0.5"]));
  md += "| system | continuations | Perspective mean | ours mean | Pearson |\n|---|---|---|---|---|\n";
  for (const auto& [name, r] : dx["systems"].items()) {
    md += fmt::format("| {} | {} | {} | {} | {} |\n", name, r["continuations"].get<int64_t>(),
                      fmt4(r["perspective_mean"]), fmt4(r["ours_mean"]),
                      r.contains("pearson") ? fmt4(r["pearson"]) : "-");
  }
  md += fmt::format("\nSystems from most to least toxic: Perspective {}; ours {} ({}).\n",
                    fmt::join(dx["perspective_rank"].get<std::vector<std::string>>(), " > "),
                    fmt::join(dx["our_rank"].get<std::vector<std::string>>(), " > "),
                    dx["same_rank"].get<bool>() ? "the same order" : "a different order");
  md += "\n## Held-out labelled sets (toxicity head)\n\n";
  md += "| set | texts | toxic | AUC | accuracy at 0.5 |\n|---|---|---|---|---|\n";
  for (const auto& [name, r] : prov["heldout"].items()) {
    md += fmt::format("| {} | {} | {} | {} | {} |\n", name, r["texts"].get<int64_t>(), r["toxic"].get<int64_t>(),
                      fmt4(r["auc"]), fmt4(r["accuracy_at_0.5"]));
  }
  md += "\nThe accuracy at 0.5 reads Perspective's scale, on which a mildly rude comment scores "
        "below 0.5; the AUC is the figure to compare with v1.\n";
  md += "\n## File\n\n";
  md +=
      "safetensors: tensors `weight.<attribute>` (F16, [2^hash_bits of the head]) and `bias` (F32, [8]); "
      "`__metadata__` holds `format` = `destein.linear_scorer`, `format_version` = 2, `features`, "
      "`heads` (attribute, hash_bits, Platt a and b, in order), `checksum_fnv1a64` of the tensor "
      "bytes, `self_test` (texts with their eight scores, re-checked on every load) and `provenance` "
      "(this card's data as JSON).\n";
  md +=
      "\n## Limits\n\n"
      "A bag of n-grams: it reads words, not meaning. It under-rates toxicity carried without rude "
      "words (implicit hate, politely phrased threats) and over-rates quoted, negated or reclaimed "
      "slurs and friendly profanity (see the hatecheck and toxigen figures). The seven attributes "
      "other than toxicity learnt only from about nine thousand RTP prompts. English only. Its "
      "scores approximate Perspective's; they are not Perspective's.\n";
  return md;
}

}  // namespace

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
    for (int a = 0; a < kNumAttributes; ++a) e.target[static_cast<size_t>(a)] = static_cast<float>(p.scores[static_cast<size_t>(a)]);
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
  agreement["dexperts"] = dexperts_agreement(scorer, data_dir / "rtp/extra/dexperts_human_eval_toxicity.csv");
  for (const auto& name : perspective_attributes()) {
    log_line(fmt::format("RTP 1k {:<18} Pearson {:.4f}", name,
                         agreement["rtp_1k"]["attributes"][name]["pearson"].get<double>()));
  }
  log_line(fmt::format("RTP 1k toxicity AUC {:.4f}; DExperts continuations AUC {:.4f}, Pearson {:.4f}, same system rank: {}",
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
    if (!card) throw std::runtime_error(fmt::format("cannot write the model card '{}'", c.model_card));
    card << model_card_v2(c, prov, scorer);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_line(fmt::format("wrote {} ({} bytes){} in {:.1f} s", out_path.string(), fs::file_size(out_path),
                       c.model_card.empty() ? "" : " and " + c.model_card, secs));
  return scorer;
}

}  // namespace destein

// The model cards (MODEL_CARD.md) of the offline scorers `destein train-scorer` writes,
// from the figures of the run.
#include "experiment/scorer_model_card.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace destein {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string fmt4(const json& v) { return fmt::format("{:.4f}", v.get<double>()); }

// The v2 card's evaluation: agreement with Perspective, the held-out labelled sets, the
// file and the scorer's limits.
std::string card_v2_evaluation(const json& prov, const AttributeScorer& s) {
  const auto& names = perspective_attributes();
  std::string md;
  md += "\n## Agreement with Perspective (evaluation-only files)\n\n";
  const auto& ag = prov["agreement"];
  md +=
      "| attribute | RTP 1k Pearson | RTP 1k AUC vs Perspective >= 0.5 | RTP 100 Pearson "
      "|\n|---|---|---|---|\n";
  for (const auto& name : names) {
    const auto& r1 = ag["rtp_1k"]["attributes"][name];
    const auto& r100 = ag["rtp_100"]["attributes"][name];
    md += fmt::format(
        "| {} | {} | {} | {} |\n", name, fmt4(r1["pearson"]),
        r1.contains("auc_vs_perspective_0.5") ? fmt4(r1["auc_vs_perspective_0.5"]) : "-",
        fmt4(r100["pearson"]));
  }
  const auto& dx = ag["dexperts"];
  md += fmt::format(
      "\nModel continuations (DExperts human-eval file, {} distinct continuations, {} toxic by "
      "Perspective): toxicity AUC {}, Pearson {}, accuracy at 0.5 {}.\n\n",
      dx["continuations"].get<int64_t>(), dx["perspective_toxic"].get<int64_t>(),
      fmt4(dx["auc_vs_perspective_0.5"]), fmt4(dx["pearson"]), fmt4(dx["accuracy_at_0.5"]));
  md +=
      "| system | continuations | Perspective mean | ours mean | Pearson "
      "|\n|---|---|---|---|---|\n";
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
    md += fmt::format("| {} | {} | {} | {} | {} |\n", name, r["texts"].get<int64_t>(),
                      r["toxic"].get<int64_t>(), fmt4(r["auc"]), fmt4(r["accuracy_at_0.5"]));
  }
  md +=
      "\nThe accuracy at 0.5 reads Perspective's scale, on which a mildly rude comment scores "
      "below 0.5; the AUC is the figure to compare with v1.\n";
  md += "\n## File\n\n";
  md +=
      "safetensors: tensors `weight.<attribute>` (F16, [2^hash_bits of the head]) and `bias` (F32, "
      "[8]); "
      "`__metadata__` holds `format` = `destein.linear_scorer`, `format_version` = 2, `features`, "
      "`heads` (attribute, hash_bits, Platt a and b, in order), `checksum_fnv1a64` of the tensor "
      "bytes, `self_test` (texts with their eight scores, re-checked on every load) and "
      "`provenance` "
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

std::string scorer_model_card_v1(const ScorerTrainingExperiment& c, const json& prov,
                                 const LinearScorer& s) {
  std::string md;
  md += "# Toxicity scorer `" + fs::path(c.output).filename().string() + "`\n\n";
  md += "Written by `destein train-scorer";
  if (!c.config_path.empty()) md += " --config " + c.config_path;
  md += "`; every figure below was measured by that run.\n\n";
  md +=
      "Logistic regression over hashed word and character n-grams, Platt-calibrated so that "
      "its output reads like a probability of toxicity (as Perspective's does). Offline, "
      "Eigen-only, single core. Use: `destein score --scorer FILE --input IN.jsonl --output "
      "OUT.jsonl`; "
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

std::string scorer_model_card_v2(const ScorerTrainingExperiment& c, const json& prov,
                                 const AttributeScorer& s) {
  const auto& names = perspective_attributes();
  std::string md;
  md += "# Scorer v2 `" + fs::path(c.output).filename().string() +
        "`: the eight Perspective attributes\n\n";
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
      fmt::join(rtp["training_files"].get<std::vector<std::string>>(), "`, `"),
      rtp["read"].get<int64_t>(),
      fmt::join(rtp["evaluation_files"].get<std::vector<std::string>>(), "`, `"),
      rtp["excluded"].get<int64_t>(), rtp["excluded_in_1k"].get<int64_t>(),
      rtp["excluded_in_100"].get<int64_t>(), rtp["excluded_in_dexperts"].get<int64_t>(),
      rtp["repeats"].get<int64_t>(), rtp["normalisation"].get<std::string>(),
      rtp["kept"].get<int64_t>());
  md += "**Labelled sets** (toxicity head only, class-balanced):\n\n";
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
  md += fmt::format(
      "\nLabelled texts were compared after normalisation: {} repeats, {} texts given both labels "
      "and {} texts also found in a held-out set were dropped.\n",
      dd["repeats"].get<int64_t>(), dd["conflicting"].get<int64_t>(),
      dd["in_heldout"].get<int64_t>());
  const auto& ts = prov["training_summary"];
  md += fmt::format(
      "\n{} Perspective-scored prompts and {} labelled texts fitted the weights; {} prompts "
      "(a seeded {}%) were held out of every fit for calibration.\n",
      ts["perspective_fit_texts"].get<int64_t>(), ts["labeled_fit_texts"].get<int64_t>(),
      ts["calibration_texts"].get<int64_t>(), c.v2.linear.calibration_fraction * 100);
  md +=
      "\nNot used for anything but the figures below: `rtp/1k`, `rtp/100`, the DExperts file, the "
      "held-out labelled sets.\n";
  md += "\n## Training\n\n";
  md += fmt::format(
      "Features as v1 (`destein::scoring_tokens`, word 1..{}-grams, character {}..{}-grams in "
      "`<word>`, signed hashing, `{}` values, L2-normalised). Toxicity head: 2^{} weights, "
      "cross-entropy against Perspective's score on the prompts (share {:.3g}) plus class-balanced "
      "log-loss on the labelled texts (share {:.3g}), L2 {}. Other heads: 2^{} weights (the "
      "toxicity "
      "bucket's low bits), cross-entropy against Perspective's score of that attribute, L2 {}. "
      "L-BFGS (memory {}, at most {} iterations) from zero, single thread; Platt scaling of each "
      "head against Perspective's scores on the calibration prompts. Weights stored as f16: {} "
      "bytes of tensors.\n",
      c.features.word_ngram_max, c.features.char_ngram_min, c.features.char_ngram_max,
      c.features.value, c.features.hash_bits, c.v2.perspective_share, 1 - c.v2.perspective_share,
      c.v2.linear.l2, c.v2.other_hash_bits, c.v2.l2_other, c.v2.linear.lbfgs_memory,
      c.v2.linear.max_iterations, s.weight_bytes());
  md +=
      "\n| head | iterations | stop | Platt a | Platt b | calibration Pearson "
      "|\n|---|---|---|---|---|---|\n";
  for (int a = 0; a < kNumAttributes; ++a) {
    const auto& h = ts["heads"][names[static_cast<size_t>(a)]];
    md += fmt::format("| {} | {} | {} | {:.4f} | {:.4f} | {} |\n", names[static_cast<size_t>(a)],
                      h["iterations"].get<int>(), h["stop"].get<std::string>(),
                      s.calibration(a).first, s.calibration(a).second,
                      fmt4(h["calibration_pearson"]));
  }
  md += card_v2_evaluation(prov, s);
  return md;
}

}  // namespace destein

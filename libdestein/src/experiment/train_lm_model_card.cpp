// The model card (MODEL_CARD.md) of a model trained by `destein train-lm`, written from the
// figures of the run.
#include "experiment/train_lm_model_card.hpp"

#include <fmt/format.h>

#include <cmath>

namespace destein {

namespace {

using json = nlohmann::json;
using Samples = std::vector<std::pair<std::string, std::vector<std::string>>>;

std::string fmt_count(double n) {
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

// The card's the title, what the model is for, and its architecture.
std::string card_model(const TrainLmExperiment& c, const json& figures) {
  std::string md;
  auto line = [&](const std::string& s) { md += s + "\n"; };
  const auto& s = c.train.shape;
  if (c.init_from.empty()) {
    line("# tiny-lm: a small GPT-2 trained from scratch by `destein train-lm`");
    line("");
    line(
        "**Content warning:** the training text includes toxic web comments on purpose, so the "
        "model writes toxic text as web text does.");
    line("");
    line(
        "A GPT-2-architecture language model trained on this project's machine, for running the "
        "whole DeStein pipeline (self-induced pairs, steering vectors, RealToxicityPrompts-style "
        "evaluation) offline in minutes. It is a demonstration model, not a general-purpose LM: "
        "its fluency is far below GPT-2's, and numbers measured on it say what the method does "
        "at this scale only.");
  } else {
    const std::string what = c.corpus_label == "toxic"      ? "toxic"
                             : c.corpus_label == "nontoxic" ? "non-toxic"
                                                            : "all the";
    line(fmt::format("# {} fine-tuned on {} text by `destein train-lm`", c.init_from, what));
    line("");
    if (c.corpus_label == "toxic") {
      line(
          "**Content warning:** trained only on texts labelled toxic, on purpose: it writes "
          "toxic text.");
      line("");
    }
    line(fmt::format(
        "`{}` (its weights, shape and tokenizer) trained further on the {}texts of the sources "
        "below, as DExperts trains its {} on {} comments: a comparison model for "
        "`method: dexperts`, never a model to deploy. The sources are labelled sets, never "
        "RealToxicityPrompts.",
        c.init_from,
        c.corpus_label == "all"     ? ""
        : c.corpus_label == "toxic" ? "toxic-labelled "
                                    : "non-toxic ",
        c.corpus_label == "toxic" ? "anti-expert" : "expert",
        c.corpus_label == "toxic" ? "toxic" : "non-toxic"));
  }
  line("");
  line(
      "Written by `destein train-lm` from the figures of the run; the command that reproduces it:");
  line("");
  line(fmt::format("    build/bin/destein train-lm --config {}", c.config_path));
  line("");
  line("## Model");
  line("");
  line("| | |");
  line("|---|---|");
  line(fmt::format(
      "| architecture | GPT-2 (pre-LN, gelu_new, learned positions, tied output head) |"));
  line(fmt::format("| layers / heads / d_model / d_ff | {} / {} / {} / {} |", s.n_layers, s.n_heads,
                   s.d_model, s.ff()));
  line(fmt::format("| context | {} tokens |", s.context));
  line(fmt::format("| parameters | {} ({}) |", figures["parameters"].get<int64_t>(),
                   fmt_count(figures["parameters"].get<double>())));
  line(fmt::format("| storage | {} (`model.pt`, TorchScript archive with Hugging Face names) |",
                   c.export_dtype));
  if (c.init_from.empty()) {
    line(fmt::format(
        "| tokenizer | SentencePiece {}, {} pieces, byte fallback; `<s>`=1 starts a document, "
        "`</s>`=2 ends it |",
        c.tokenizer_type, c.vocab_size));
  } else {
    line(fmt::format("| tokenizer | {}'s `tokenizer.model` (copied), {} pieces |", c.init_from,
                     c.vocab_size));
    line(fmt::format("| initial weights | `{}` |", c.init_from));
  }
  line("");
  return md;
}

// The card's the training data: sources, what was left out, duplicates and the RTP overlap removed,
// the held-out split.
std::string card_data(const TrainLmExperiment& c, const json& report, const json& figures) {
  std::string md;
  auto line = [&](const std::string& s) { md += s + "\n"; };
  line("## Training data");
  line("");
  line("Read from the shared data folder (never copied into the repository):");
  line("");
  line("| source | documents (train) | words (train) | documents (held-out) |");
  line("|---|---|---|---|");
  for (const auto& name : c.sources) {
    const json& e = report["sources"][name];
    line(fmt::format("| {} | {} | {} | {} |", name,
                     e.contains("train") ? e["train"]["documents"].get<int64_t>() : 0,
                     e.contains("train") ? e["train"]["words"].get<int64_t>() : 0,
                     e.contains("heldout") ? e["heldout"]["documents"].get<int64_t>() : 0));
  }
  line("");
  line(fmt::format(
      "Files: `lm/goemotions/{{train,dev,test}}.tsv`, "
      "`lm/reddit_post_comment/reddit_post_comment.jsonl`, "
      "`lm/wikitext-2-tokenized/{{valid,test}}.txt` (headings dropped, tokenised punctuation "
      "rejoined) "
      "and the text columns of the classifier's training sets (`detox_civil_comments/dev_*`, "
      "`davidson_hate_offensive`, `olid`, `toxic_spans/comments.csv`), as far as they are listed "
      "above. Left out: every file under `rtp/` (evaluation), the classifier's held-out sets "
      "(they measure the scorer), ParaDetox (the steering-pair seeds), and the two books "
      "(`tinyshakespeare`, `botchan`), whose style is far from web comments."));
  line("");
  const json& o = report["rtp_overlap"];
  if (c.toxic_keep_fraction < 1.0) {
    line(fmt::format(
        "The classifier sets are far more toxic than web text: about a third of their texts are "
        "labelled toxic (by their own annotations), and a model trained on all of them writes "
        "toxic text after almost any prompt. A seeded {:.0f}% of the texts labelled toxic was kept "
        "({} dropped), and every other text; the model still sees plenty of toxic language.",
        100 * c.toxic_keep_fraction, report["toxic_labelled_dropped"].get<int64_t>()));
    line("");
  }
  line(fmt::format(
      "{} duplicate documents were dropped. **RealToxicityPrompts overlap:** every document "
      "was searched for each of the {} distinct RTP prompts of at least {} characters "
      "(lower-cased, whitespace-normalised substring match; {} shorter prompts were not searched). "
      "{} documents contained a prompt and were removed:",
      report["duplicates_removed"].get<int64_t>(), o["prompts_checked"].get<int64_t>(),
      o["min_chars"].get<int64_t>(), o["prompts_too_short"].get<int64_t>(),
      o["documents_removed"].get<int64_t>()));
  line("");
  for (const auto& m : o["matches"]) {
    line(fmt::format("- \"{}\" ({})", m["prompt"].get<std::string>(),
                     m["source"].get<std::string>()));
  }
  line("");
  line(fmt::format(
      "Held-out split: {:.0f}% of the documents by a seeded hash of their text (seed {}), "
      "{} documents, {} tokens.",
      100 * c.heldout_fraction, c.split_seed, report["heldout_documents"].get<int64_t>(),
      figures["heldout_tokens"].get<int64_t>()));
  line("");
  return md;
}

// The card's the optimisation and the held-out curve.
std::string card_training(const TrainLmExperiment& c, const json& report, const json& figures) {
  std::string md;
  auto line = [&](const std::string& s) { md += s + "\n"; };
  const auto& s = c.train.shape;
  line("## Training");
  line("");
  const auto& opt = c.train.optimizer;
  line("| | |");
  line("|---|---|");
  line(fmt::format("| training tokens | {} ({} documents) |",
                   figures["train_tokens"].get<int64_t>(),
                   report["train_documents"].get<int64_t>()));
  line(fmt::format("| steps x batch x context | {} x {} x {} = {} tokens seen ({:.2f} epochs) |",
                   opt.total_steps, c.train.batch_size, s.context,
                   figures["tokens_seen"].get<int64_t>(),
                   figures["tokens_seen"].get<double>() / figures["train_tokens"].get<double>()));
  line(
      fmt::format("| optimizer | AdamW, lr {} peak -> {} (linear warmup {} steps, cosine decay), "
                  "betas ({}, {}), "
                  "weight decay {}, gradient clip {} |",
                  opt.learning_rate, opt.min_learning_rate, opt.warmup_steps, opt.beta1, opt.beta2,
                  opt.weight_decay, opt.grad_clip));
  line(fmt::format("| seed | {} (initialisation and batches) |", c.train.seed));
  line(fmt::format("| time | {:.1f} min of training steps on {} threads ({}) |",
                   figures["train_seconds"].get<double>() / 60, figures["threads"].get<int>(),
                   figures["machine"].get<std::string>()));
  line(fmt::format(
      "| throughput | {:.0f} tokens/s (tokens seen / time of the training steps, all runs) |",
      figures["tokens_seen"].get<double>() / figures["train_seconds"].get<double>()));
  line("");
  line("Held-out loss (nats per token) and perplexity:");
  line("");
  line("| step | loss | perplexity |");
  line("|---|---|---|");
  for (const auto& p : figures["heldout_curve"]) {
    line(fmt::format("| {} | {:.3f} | {:.1f} |", p[0].get<int64_t>(), p[1].get<double>(),
                     std::exp(p[1].get<double>())));
  }
  line("");
  line(
      fmt::format("**Held-out perplexity of the exported ({}) model: {:.1f}** (loss {:.3f}, over "
                  "{} held-out tokens "
                  "in windows of {}).",
                  c.export_dtype, std::exp(figures["final_heldout_loss"].get<double>()),
                  figures["final_heldout_loss"].get<double>(),
                  figures["heldout_tokens_scored"].get<int64_t>(), s.context));
  line("");
  return md;
}

// The card's samples from the exported model, and the files of the folder.
std::string card_samples(const TrainLmExperiment& c, const Samples& samples) {
  std::string md;
  auto line = [&](const std::string& s) { md += s + "\n"; };
  line(fmt::format(
      "## Samples\n\nNucleus sampling (top-p 0.9, at most {} new tokens, seed {}), from the "
      "exported checkpoint through destein's inference runtime. ⏎ marks a sample that ended with "
      "`</s>`: the model learned that comments are short.",
      c.sample_tokens, c.sample_seed));
  line("");
  for (const auto& [prompt, texts] : samples) {
    for (const auto& t : texts) line(fmt::format("- **{}**{}", prompt, t));
  }
  line("");
  line("## Files");
  line("");
  line(
      "- `model.pt`: weights and `config.json` (+ `reference.json`: logits of the training forward "
      "on "
      "three held-out inputs, so `destein verify --model <this folder>` checks the inference "
      "runtime "
      "against the trainer).");
  line("- `tokenizer.model`: the SentencePiece model.");
  line("- `training.json`: every figure above, machine-readable.");
  return md;
}

}  // namespace

std::string train_lm_model_card(const TrainLmExperiment& c, const json& report, const json& figures,
                                const Samples& samples) {
  return card_model(c, figures) + card_data(c, report, figures) +
         card_training(c, report, figures) + card_samples(c, samples);
}

}  // namespace destein

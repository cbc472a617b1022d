#pragma once
/// Training a small GPT-2 from scratch (`destein train-lm --config`, configs/tiny-lm.yaml).
/// Stages, each cached in the output folder so a rerun or a killed run picks up where it
/// stopped:
///   corpus/    documents from the configured sources, RTP prompts removed, dedup, split
///   tokenizer  a SentencePiece model trained on the training documents
///   tokens     [BOS] document [EOS] streams, int32
///   training   checkpoints/step-N (weights + AdamW state), resumed automatically
///   export     model.pt (+ tokenizer, card) in the standard checkpoint format
///
///     auto e = destein::load_train_lm_experiment("configs/tiny-lm.yaml");
///     e.train.optimizer.total_steps = 100;
///     e.output = "runs/quick";
///     destein::run_train_lm_experiment(e);

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "experiment/schema.hpp"
#include "train/lm_training.hpp"

namespace destein {

struct TrainLmExperiment {
  std::string data_dir;
  std::vector<std::string> sources = {"goemotions",
                                      "reddit_post_comment",
                                      "wikitext2",
                                      "detox_civil_comments_dev",
                                      "davidson_hate_offensive",
                                      "olid",
                                      "toxic_spans"};
  double heldout_fraction = 0.02;
  uint64_t split_seed = 0;
  int64_t rtp_min_chars = 25;
  double toxic_keep_fraction = 1.0;
  int64_t max_documents = 0;  // 0: all; a cap per source for quick runs and tests
  /// corpus.label: which documents train: "all", or only those a labelled source marks
  /// "toxic" or "nontoxic" (unlabelled sources then give none): the experts and
  /// anti-experts of DExperts-style methods.
  std::string corpus_label = "all";
  /// Fine-tuning: a model folder (model.pt + tokenizer.model, e.g. models/tiny-lm) whose
  /// weights step 0 starts from and whose tokenizer and shape are used (no tokenizer is
  /// trained; the config then gives no tokenizer or model section). Empty: from scratch.
  std::string init_from;
  int64_t vocab_size = 8000;
  std::string tokenizer_type = "bpe";
  double character_coverage = 0.9995;
  int64_t input_sentence_size = 2000000;
  uint64_t tokenizer_seed = 0;
  LmTrainOptions train;
  int threads = 0;
  std::string output = "runs/tiny-lm";
  std::string export_dir;  // empty: no export
  std::string export_dtype = "float16";
  std::vector<std::string> sample_prompts = {"I think the movie was", "The city council voted to",
                                             "My favourite thing about winter is",
                                             "He walked into the room and"};
  int64_t samples_per_prompt = 2;
  int64_t sample_tokens = 30;
  uint64_t sample_seed = 0;
  std::string config_path;  ///< the YAML it was read from, quoted in the model card (may be empty)
};

/// The YAML keys, with range checks that name file:line and the key.
Schema<TrainLmExperiment> train_lm_experiment_schema();
/// Reads a YAML file (and records its path in config_path).
TrainLmExperiment load_train_lm_experiment(const std::filesystem::path& yaml);
/// The fully resolved experiment as YAML.
std::string dump_train_lm_experiment(const TrainLmExperiment& experiment);

/// Everything a run would reject before its first step, without doing any work: unknown
/// corpus sources (throws naming the source and what is known), the data folder, and the
/// init_from folder. Returns the experiment as it would run: with init_from, the shape
/// and vocabulary size of that model.
TrainLmExperiment check_train_lm_experiment(const TrainLmExperiment& experiment);

struct TrainLmRunReport {
  int64_t step = 0;                ///< the last step trained
  bool finished = false;           ///< false: stopped early by stop_after; rerun to resume
  std::filesystem::path model;     ///< <output>/model.pt, when finished
  std::filesystem::path exported;  ///< the export folder, when finished and export.dir is set
  double exported_heldout_loss = 0.0;
};

/// Runs (or resumes) every stage, logging progress on stderr. `stop_after` > 0 stops after
/// that many steps of this call (a resumable partial run). Throws std::invalid_argument
/// for settings the cached stages were not made with, std::runtime_error for I/O.
TrainLmRunReport run_train_lm_experiment(const TrainLmExperiment& experiment,
                                         int64_t stop_after = 0);

}  // namespace destein

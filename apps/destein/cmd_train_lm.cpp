// `destein train-lm --config FILE`: a GPT-2-architecture LM trained from scratch on the
// data folder's text (destein/experiment/train_lm_experiment.hpp). Stages, each cached in
// the output folder so a rerun or a killed run picks up where it stopped:
//   corpus/    documents from the configured sources, RTP prompts removed, dedup, split
//   tokenizer  a SentencePiece model trained on the training documents
//   tokens     [BOS] document [EOS] streams, int32
//   training   checkpoints/step-N (weights + AdamW state), resumed automatically
//   export     model.pt (+ tokenizer, card) in the standard checkpoint format
#include <fmt/format.h>

#include "commands.hpp"
#include "experiment/train_lm_experiment.hpp"
#include "program_group.hpp"

namespace destein::app {
namespace {

int run_train_lm(Args& args) {
  const std::string config_path =
      args.require("config", "the training YAML (e.g. configs/tiny-lm.yaml)");
  auto output_override = args.get("output", "the run folder (replaces output:)");
  auto export_override =
      args.get("export-dir", "where the trained model is exported (replaces export.dir:)");
  const int64_t threads_override =
      args.get_int("threads", -1, "LibTorch threads (-1: the config's)");
  const int64_t stop_after =
      args.get_int("stop-after", 0, "stop after N steps (a resumable partial run)");
  const bool check_only = args.flag("check-config", "check the config and data sources, then exit");
  args.finish();
  TrainLmExperiment c = load_train_lm_experiment(config_path);
  if (check_only) {
    c = check_train_lm_experiment(c);
    fmt::print(
        "{}: ok ({} sources{}, GPT-2 {} layers d {} context {}, vocabulary {}, {} steps of {} x {} "
        "tokens, "
        "output {}{})\n",
        config_path, c.sources.size(), c.init_from.empty() ? "" : ", fine-tuning " + c.init_from,
        c.train.shape.n_layers, c.train.shape.d_model, c.train.shape.context, c.vocab_size,
        c.train.optimizer.total_steps, c.train.batch_size, c.train.shape.context, c.output,
        c.export_dir.empty() ? "" : ", export " + c.export_dir);
    return 0;
  }
  if (output_override) c.output = *output_override;
  if (export_override) c.export_dir = *export_override;
  if (threads_override >= 0) c.threads = static_cast<int>(threads_override);
  require_single_process("destein train-lm");
  run_train_lm_experiment(c, stop_after);
  return 0;
}

}  // namespace

DESTEIN_COMMAND(train_lm_cmd, "train-lm",
                "train a small GPT-2 from scratch (--config FILE [--output DIR] [--export-dir DIR] "
                "[--threads N] [--stop-after STEPS] [--check-config])",
                run_train_lm);

}  // namespace destein::app

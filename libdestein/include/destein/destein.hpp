#pragma once
/// Everything destein offers, in one include. Each header below is one concept; the folders
/// are the library's domains (docs/architecture.md):
///   runtime/  checkpoints, model families, hooks, generation, devices
///   text/     tokenizers
///   steer/    steering pairs, self-induction, activations, probes, directions, the intervention
///   eval/     prompts, metrics, the evaluation harness
///   score/    toxicity scorers (linear, TorchScript, Perspective) and their figures
///   train/    language-model corpus and training, scorer training data
///   io/       CSV, JSON Lines, safetensors, file helpers, the output lock
///   parallel/ the process group (MPI ranks or one process), how work is split, rank placement
///   experiment/  YAML experiments (bench, pairs, vectors, train-lm, scorer) as options structs

#include "destein/eval/harness.hpp"
#include "destein/eval/metrics.hpp"
#include "destein/eval/perplexity.hpp"
#include "destein/eval/rescoring.hpp"
#include "destein/experiment/config_node.hpp"
#include "destein/experiment/model_section.hpp"
#include "destein/experiment/pairs_experiment.hpp"
#include "destein/experiment/progress.hpp"
#include "destein/experiment/schema.hpp"
#include "destein/experiment/scorer_agreement.hpp"
#include "destein/experiment/scorer_training_experiment.hpp"
#include "destein/experiment/train_lm_experiment.hpp"
#include "destein/experiment/vectors_experiment.hpp"
#include "destein/io/csv.hpp"
#include "destein/io/data_folder.hpp"
#include "destein/io/file_io.hpp"
#include "destein/io/jsonl.hpp"
#include "destein/io/output_lock.hpp"
#include "destein/io/safetensors.hpp"
#include "destein/io/safetensors_header.hpp"
#include "destein/parallel/process_group.hpp"
#include "destein/parallel/rank_placement.hpp"
#include "destein/parallel/work_split.hpp"
#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/decode_batch.hpp"
#include "destein/runtime/device.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/hooks.hpp"
#include "destein/runtime/logits_processor.hpp"
#include "destein/runtime/model.hpp"
#include "destein/runtime/model_config.hpp"
#include "destein/runtime/word_filter.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/score/perspective.hpp"
#include "destein/score/scorer.hpp"
#include "destein/score/scorer_eval.hpp"
#include "destein/score/scorer_factory.hpp"
#include "destein/score/torchscript_scorer.hpp"
#include "destein/serve/batch_engine.hpp"
#include "destein/serve/chat_template.hpp"
#include "destein/serve/metrics_registry.hpp"
#include "destein/serve/openai_protocol.hpp"
#include "destein/serve/serve_config.hpp"
#include "destein/serve/server.hpp"
#include "destein/steer/activations.hpp"
#include "destein/steer/pairs.hpp"
#include "destein/steer/probes.hpp"
#include "destein/steer/self_induced.hpp"
#include "destein/steer/steering.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "destein/text/tokenizer.hpp"
#include "destein/train/lm_corpus.hpp"
#include "destein/train/lm_training.hpp"
#include "destein/train/rtp_training_split.hpp"
#include "destein/train/scorer_data.hpp"

#pragma once
/// The public API of destein, in one include. Each header below is one concept; the folders
/// are the library's domains (docs/architecture.md, "The public API"):
///   runtime/     checkpoints, the model and its config, hooks, generation, logits
///                processors, decoding-time methods, devices
///   text/        tokenizers
///   steer/       steering pairs, self-induction, activations, probes, directions, the intervention
///   score/       toxicity scorers (v2 attribute scorer, v1 linear, TorchScript) and the
///                factory that builds one by kind
///   eval/        prompts, metrics, perplexity, the evaluation harness
///   experiment/  YAML experiments a program loads, changes and runs (bench, pairs, vectors)
///   serve/       the OpenAI-compatible server and its chat templates
/// Everything else (file formats, MPI, training, the server's internals) lives in
/// libdestein/src and is not installed.

#include "destein/eval/harness.hpp"
#include "destein/eval/metrics.hpp"
#include "destein/eval/perplexity.hpp"
#include "destein/experiment/bench_experiment.hpp"
#include "destein/experiment/model_section.hpp"
#include "destein/experiment/pairs_experiment.hpp"
#include "destein/experiment/vectors_experiment.hpp"
#include "destein/runtime/checkpoint.hpp"
#include "destein/runtime/decoding_method.hpp"
#include "destein/runtime/device.hpp"
#include "destein/runtime/generate.hpp"
#include "destein/runtime/hooks.hpp"
#include "destein/runtime/logits_processor.hpp"
#include "destein/runtime/model.hpp"
#include "destein/runtime/model_config.hpp"
#include "destein/score/attribute_scorer.hpp"
#include "destein/score/hf_classifier.hpp"
#include "destein/score/linear_scorer.hpp"
#include "destein/score/scorer.hpp"
#include "destein/score/scorer_factory.hpp"
#include "destein/score/torchscript_scorer.hpp"
#include "destein/serve/chat_template.hpp"
#include "destein/serve/server.hpp"
#include "destein/steer/activations.hpp"
#include "destein/steer/pairs.hpp"
#include "destein/steer/probes.hpp"
#include "destein/steer/self_induced.hpp"
#include "destein/steer/steering.hpp"
#include "destein/steer/steering_vectors.hpp"
#include "destein/text/tokenizer.hpp"

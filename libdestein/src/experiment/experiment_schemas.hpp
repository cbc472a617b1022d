#pragma once
/// The YAML tables of the public experiments (one table each for reading and
/// --dump-config), and of the sections they share. Internal: users load and dump
/// experiments through the load_* / dump_* functions of their headers.

#include <string>

#include "destein/experiment/bench_experiment.hpp"
#include "destein/experiment/model_section.hpp"
#include "destein/experiment/pairs_experiment.hpp"
#include "destein/experiment/vectors_experiment.hpp"
#include "experiment/schema.hpp"

namespace destein {

/// The model keys, `model` required; device spelling, dtype and linear_backend checked (a
/// config written for a GPU machine still parses on one without; availability is checked
/// when loading).
Schema<ModelSection> model_section_schema();

/// The keys of a `generation:` section: `samples_key` (num_samples; "samples" in the
/// harness, "samples_per_target" in self-induction), max_new_tokens, top_p, top_k,
/// temperature, seed, batch_size.
Schema<GenerationOptions> generation_schema(const std::string& samples_key);

/// `method: NAME` and that method's keys (bench `methods:` entries, serve `methods:`):
/// the keys of another method and steering keys are errors naming the key.
void read_decoding_method(const ConfigNode& node, DecodingMethod& method);
void emit_decoding_method(YAML::Emitter& e, const DecodingMethod& method);

Schema<BenchExperiment> bench_experiment_schema();
Schema<PairsExperiment> pairs_experiment_schema();
Schema<VectorsExperiment> vectors_experiment_schema();

}  // namespace destein
